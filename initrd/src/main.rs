//! `cocos-init`: the initramfs PID 1 (skeleton).

fn main() {}
