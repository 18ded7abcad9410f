//! GPT partition table (in progress).
