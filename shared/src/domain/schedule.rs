//! Cron schedules of projects: the expression, its time zone, the
//! parameters of the executions it starts, and when it fires next.
//!
//! The API accepts the standard five-field syntax (minute, hour, day of
//! month, month, day of week; day of month and day of week match when
//! either does, as in Vixie cron) and the `@yearly`, `@annually`,
//! `@monthly`, `@weekly`, `@daily` and `@hourly` macros, evaluated in an
//! IANA time zone (default `UTC`). The store may also hold a six-field
//! pattern whose first field is seconds; only tests write one.
//!
//! Daylight saving time: the wall clock is what the expression matches.
//! A time that does not exist (02:30 in Europe/Berlin on the day the
//! clocks jump from 02:00 to 03:00) fires once, at the first instant after
//! the gap (03:00 local); a time that happens twice (02:30 on the day the
//! clocks go back from 03:00 to 02:00) fires once, at its first occurrence
//! (02:30 CEST). Expressions that fire every minute or hour keep doing so
//! through the repeated hour.

use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The macros the API accepts instead of five fields.
pub const MACROS: &[&str] = &["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"];

/// The time zone of a schedule that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// A project's schedule as stored and shown (without `next_run_at`, which
/// the store keeps beside it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub cron: String,
    pub timezone: String,
    /// The parameters of every execution the schedule starts.
    pub parameters: Map<String, Value>,
    /// A disabled schedule is kept but never fires (`next_run_at` is null).
    pub enabled: bool,
}

impl Schedule {
    /// Checks a schedule as the API receives it: five fields or a macro,
    /// an IANA zone. Errors are validation errors on `schedule.cron` or
    /// `schedule.timezone`.
    pub fn validated(
        cron: &str,
        timezone: Option<&str>,
        parameters: Map<String, Value>,
        enabled: bool,
    ) -> Result<Self> {
        let cron = cron.trim();
        let fields = cron.split_whitespace().count();
        let is_macro = MACROS.iter().any(|m| m.eq_ignore_ascii_case(cron));
        if !is_macro && fields != 5 {
            return Err(Error::validation(
                "schedule.cron",
                "cron must have five fields (minute hour day-of-month month day-of-week) or be one of @yearly, @annually, @monthly, @weekly, @daily, @hourly",
            ));
        }
        let schedule = Schedule {
            cron: cron.to_owned(),
            timezone: timezone.unwrap_or(DEFAULT_TIMEZONE).trim().to_owned(),
            parameters,
            enabled,
        };
        schedule.expression()?;
        schedule.zone()?;
        // An expression that never matches (30 February) is refused too.
        if schedule.next_after(Utc::now())?.is_none() {
            return Err(Error::validation("schedule.cron", "cron never matches a date"));
        }
        Ok(schedule)
    }

    /// The parsed expression (five fields, a macro, or six with seconds).
    pub fn expression(&self) -> Result<Cron> {
        Cron::from_str(&self.cron)
            .map_err(|error| Error::validation("schedule.cron", format!("invalid cron expression: {error}")))
    }

    /// The time zone.
    pub fn zone(&self) -> Result<Tz> {
        Tz::from_str(&self.timezone).map_err(|_| {
            Error::validation(
                "schedule.timezone",
                format!("'{}' is not an IANA time zone name", self.timezone),
            )
        })
    }

    /// The first time strictly after `after` that the schedule fires,
    /// truncated to microseconds (what the store keeps); `None` when it
    /// never fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        let cron = self.expression()?;
        let zone = self.zone()?;
        let local = after.with_timezone(&zone);
        match cron.find_next_occurrence(&local, false) {
            Ok(next) => Ok(Some(next.with_timezone(&Utc).trunc_subsecs(6))),
            Err(_) => Ok(None),
        }
    }

    /// When the schedule fires next, counted from `now`: `None` when it is
    /// disabled or never fires again.
    pub fn next_run(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        if !self.enabled {
            return Ok(None);
        }
        self.next_after(now)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn daily_at_0230_berlin() -> Schedule {
        Schedule::validated("30 2 * * *", Some("Europe/Berlin"), Map::new(), true).expect("succeeds")
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("succeeds")
            .with_timezone(&Utc)
    }

    /// Every firing of `schedule` in `[from, to)`.
    fn firings(schedule: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut cursor = from - chrono::Duration::microseconds(1);
        while let Some(next) = schedule.next_after(cursor).expect("succeeds") {
            if next >= to {
                break;
            }
            out.push(next);
            cursor = next;
        }
        out
    }

    #[test]
    fn a_0230_schedule_runs_once_at_0300_on_the_spring_forward_day_in_berlin() {
        let schedule = daily_at_0230_berlin();
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        let runs = firings(
            &schedule,
            utc("2026-03-28T23:00:00Z"),
            utc("2026-03-29T22:00:00Z"),
        );
        assert_eq!(runs, vec![utc("2026-03-29T01:00:00Z")], "03:00 CEST is 01:00 UTC");
        // The days around it run at 02:30 local.
        let before = firings(
            &schedule,
            utc("2026-03-27T23:00:00Z"),
            utc("2026-03-28T23:00:00Z"),
        );
        assert_eq!(before, vec![utc("2026-03-28T01:30:00Z")]);
        let after = firings(
            &schedule,
            utc("2026-03-29T22:00:00Z"),
            utc("2026-03-30T22:00:00Z"),
        );
        assert_eq!(after, vec![utc("2026-03-30T00:30:00Z")]);
    }

    #[test]
    fn a_0230_schedule_runs_once_on_the_fall_back_day_in_berlin() {
        let schedule = daily_at_0230_berlin();
        // 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
        let runs = firings(
            &schedule,
            utc("2026-10-24T22:00:00Z"),
            utc("2026-10-25T23:00:00Z"),
        );
        assert_eq!(runs, vec![utc("2026-10-25T00:30:00Z")], "the first 02:30, CEST");
        // Asking right after the first 02:30 does not yield the second one.
        assert_eq!(
            schedule
                .next_after(utc("2026-10-25T00:30:00Z"))
                .expect("succeeds"),
            Some(utc("2026-10-26T01:30:00Z"))
        );
    }

    #[test]
    fn an_hourly_schedule_keeps_firing_through_the_repeated_hour() {
        let schedule =
            Schedule::validated("@hourly", Some("Europe/Berlin"), Map::new(), true).expect("succeeds");
        let runs = firings(
            &schedule,
            utc("2026-10-24T22:00:00Z"),
            utc("2026-10-25T23:00:00Z"),
        );
        assert_eq!(runs.len(), 25, "the fall-back day has 25 hours: {runs:?}");
        let runs = firings(
            &schedule,
            utc("2026-03-28T23:00:00Z"),
            utc("2026-03-29T22:00:00Z"),
        );
        assert_eq!(runs.len(), 23, "the spring-forward day has 23 hours: {runs:?}");
    }

    #[test]
    fn a_weekday_schedule_follows_its_zone() {
        let schedule =
            Schedule::validated("0 6 * * 1-5", Some("Europe/Berlin"), Map::new(), true).expect("succeeds");
        // Saturday 2026-12-05 → Monday 2026-12-07 06:00 CET = 05:00 UTC.
        let next = schedule
            .next_after(
                Utc.with_ymd_and_hms(2026, 12, 5, 12, 0, 0)
                    .single()
                    .expect("a valid time"),
            )
            .expect("succeeds");
        assert_eq!(next, Some(utc("2026-12-07T05:00:00Z")));
    }

    #[test]
    fn the_time_zone_defaults_to_utc_and_macros_are_accepted() {
        for text in MACROS {
            let schedule = Schedule::validated(text, None, Map::new(), true).expect("succeeds");
            assert_eq!(schedule.timezone, "UTC");
        }
        let daily = Schedule::validated("@daily", None, Map::new(), true).expect("succeeds");
        assert_eq!(
            daily.next_after(utc("2026-12-03T10:00:00Z")).expect("succeeds"),
            Some(utc("2026-12-04T00:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_are_errors_on_schedule_cron() {
        for text in [
            "",
            "* * * *",
            "0 0 * * * *",
            "61 * * * *",
            "* 25 * * *",
            "@often",
            "a b c d e",
            "0 0 30 2 *",
        ] {
            let error = Schedule::validated(text, None, Map::new(), true).expect_err("an error");
            assert_eq!(field_of(&error), "schedule.cron", "{text:?}");
        }
    }

    #[test]
    fn bad_zones_are_errors_on_schedule_timezone() {
        for zone in ["Mars/Olympus", "", "CEST+1", "europe/berlin_"] {
            let error = Schedule::validated("* * * * *", Some(zone), Map::new(), true).expect_err("an error");
            assert_eq!(field_of(&error), "schedule.timezone", "{zone:?}");
        }
    }

    #[test]
    fn a_disabled_schedule_has_no_next_run() {
        let schedule = Schedule::validated("* * * * *", None, Map::new(), false).expect("succeeds");
        assert_eq!(schedule.next_run(Utc::now()).expect("succeeds"), None);
    }

    #[test]
    fn a_stored_six_field_pattern_fires_every_second() {
        let schedule = Schedule {
            cron: "* * * * * *".into(),
            timezone: "UTC".into(),
            parameters: Map::new(),
            enabled: true,
        };
        assert_eq!(
            schedule
                .next_after(utc("2026-12-03T10:00:00.5Z"))
                .expect("succeeds"),
            Some(utc("2026-12-03T10:00:01Z"))
        );
    }

    fn field_of(error: &Error) -> String {
        match error {
            Error::Validation { field, .. } => field.clone().unwrap_or_default(),
            other => panic!("not a validation error: {other:?}"),
        }
    }
}
