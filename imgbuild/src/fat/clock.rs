//! Time in the ESP: the one timestamp of an [`EspSpec`](super::EspSpec) as
//! a FAT date and time, and the clock `fatfs` is given so that everything
//! it stamps gets that time (see the determinism notes of [`super`]).

use std::cell::Cell;

use super::FAT_EPOCH_UNIX;

/// Unix time of 2107-12-31 23:59:58 UTC, the latest FAT time
/// (FAT spec, 'FAT Directory Structure', Date and Time Formats:
/// 7-bit year offset, 2-second count).
pub(super) const FAT_END_UNIX: i64 = 4_354_819_198;

/// A FAT date and time, as UTC.
pub(super) fn fat_date_time(unix: i64) -> fatfs::DateTime {
    let t = unix.clamp(FAT_EPOCH_UNIX, FAT_END_UNIX);
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // All values are in range after the clamp: year 1980..=2107.
    fatfs::DateTime {
        date: fatfs::Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        time: fatfs::Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            // FAT spec, 'FAT Directory Structure', Date and Time Formats: the time
            // counts 2-second units.
            sec: (secs % 60 / 2 * 2) as u16,
            millis: 0,
        },
    }
}

/// Proleptic Gregorian (year, month, day) of a count of days since
/// 1970-01-01 (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

thread_local! {
    /// The time `SpecClock` reports on this thread, set by `ClockGuard`.
    static SPEC_TIME: Cell<Option<fatfs::DateTime>> = const { Cell::new(None) };
}

/// The `fatfs` time provider.  `fatfs` 0.3 takes a `&'static dyn
/// TimeProvider`, so the per-call time lives in a thread-local set for the
/// duration of [`write_esp`] (the filesystem object never leaves that
/// thread).  Outside that it reports 1980-01-01 00:00:00, never the clock.
#[derive(Debug)]
struct SpecClock;

static SPEC_CLOCK: SpecClock = SpecClock;

impl fatfs::TimeProvider for SpecClock {
    fn get_current_date(&self) -> fatfs::Date {
        self.get_current_date_time().date
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        SPEC_TIME
            .with(Cell::get)
            .unwrap_or_else(|| fat_date_time(FAT_EPOCH_UNIX))
    }
}

/// Sets the thread's spec time and restores the previous one on drop.
pub(super) struct ClockGuard {
    previous: Option<fatfs::DateTime>,
}

impl ClockGuard {
    /// Makes `time` the thread's spec time until the guard is dropped.
    pub(super) fn set(time: fatfs::DateTime) -> Self {
        ClockGuard {
            previous: SPEC_TIME.with(|t| t.replace(Some(time))),
        }
    }
}

impl Drop for ClockGuard {
    fn drop(&mut self) {
        SPEC_TIME.with(|t| t.set(self.previous));
    }
}

/// The options every mount of the ESP uses: no access-date updates, and
/// the spec clock.
pub(super) fn fs_options() -> fatfs::FsOptions {
    fatfs::FsOptions::new()
        .update_accessed_date(false)
        .time_provider(&SPEC_CLOCK)
}

/// DOS (date, time) words (FAT spec, 'FAT Directory Structure', Date and Time Formats).
pub(super) fn encode_dos(t: fatfs::DateTime) -> (u16, u16) {
    let date = ((t.date.year - 1980) << 9) | (t.date.month << 5) | t.date.day;
    let time = (t.time.hour << 11) | (t.time.min << 5) | (t.time.sec / 2);
    (date, time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_date_command() {
        // Expected values from `date -u -d @N`.
        let t = fat_date_time(1_700_000_000); // Tue Nov 14 22:13:20 UTC 2023
        assert_eq!((t.date.year, t.date.month, t.date.day), (2023, 11, 14));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (22, 13, 20));
        let t = fat_date_time(951_825_601); // Tue Feb 29 12:00:01 UTC 2000
        assert_eq!((t.date.year, t.date.month, t.date.day), (2000, 2, 29));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (12, 0, 0));
        let t = fat_date_time(0);
        assert_eq!((t.date.year, t.date.month, t.date.day), (1980, 1, 1));
        let t = fat_date_time(i64::MAX);
        assert_eq!((t.date.year, t.date.month, t.date.day), (2107, 12, 31));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (23, 59, 58));
    }

    #[test]
    fn spec_clock_is_scoped() {
        use fatfs::TimeProvider;
        let epoch = SPEC_CLOCK.get_current_date_time();
        {
            let _g = ClockGuard::set(fat_date_time(1_700_000_000));
            assert_eq!(SPEC_CLOCK.get_current_date().year, 2023);
        }
        assert_eq!(SPEC_CLOCK.get_current_date_time(), epoch);
        assert_eq!(epoch.date.year, 1980);
    }
}
