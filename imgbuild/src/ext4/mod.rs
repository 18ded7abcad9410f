//! A purpose-built ext4 writer for read-only images (in progress).
