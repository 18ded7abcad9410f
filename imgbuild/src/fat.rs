//! FAT32 EFI system partition (in progress).
