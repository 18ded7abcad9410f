//! `cocos-init`: the initramfs PID 1 (skeleton; see docs/architecture.md).
