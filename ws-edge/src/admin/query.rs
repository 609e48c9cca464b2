//! The operators' filter vocabulary, parsed in one place for the admin REST routes and for
//! `chatctl`: sort fields, sort orders, usage groupings, booleans and times (RFC 3339, or a
//! plain UTC date). Each parser returns what is wrong as a sentence fragment ("must be one of
//! ..."); the caller prefixes the name of the parameter or flag it read.

use chat_proto::pb::admin::{SortField, SortOrder, UsageGrouping};
use chrono::{DateTime, NaiveDate, Utc};

/// `lastActivity`, `started`, `duration`, `user` (case and `-`/`_` ignored, so
/// `last-activity` and `last_activity` read the same).
pub fn parse_sort(raw: &str) -> Result<SortField, String> {
    match squash(raw).as_str() {
        "lastactivity" => Ok(SortField::LastActivity),
        "started" => Ok(SortField::Started),
        "duration" => Ok(SortField::Duration),
        "user" => Ok(SortField::User),
        _ => Err("must be one of lastActivity, started, duration, user".to_owned()),
    }
}

/// `asc` / `ascending`, `desc` / `descending`.
pub fn parse_order(raw: &str) -> Result<SortOrder, String> {
    match squash(raw).as_str() {
        "asc" | "ascending" => Ok(SortOrder::Ascending),
        "desc" | "descending" => Ok(SortOrder::Descending),
        _ => Err("must be asc or desc".to_owned()),
    }
}

/// `user`, `model`, `day`.
pub fn parse_grouping(raw: &str) -> Result<UsageGrouping, String> {
    match squash(raw).as_str() {
        "user" => Ok(UsageGrouping::User),
        "model" => Ok(UsageGrouping::Model),
        "day" => Ok(UsageGrouping::Day),
        _ => Err("must be one of user, model, day".to_owned()),
    }
}

/// `true` or `false`.
pub fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("must be true or false".to_owned()),
    }
}

/// Which end of a time range a value bounds. A plain date means the start of that UTC day as
/// a lower bound and the end of it (the next day's 00:00, exclusive) as an upper bound, so
/// `from=2024-05-01&to=2024-05-01` is that whole day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    From,
    To,
}

/// An RFC 3339 time (`2024-05-01T12:00:00Z`, any offset) or a plain date (`2024-05-01`, UTC).
pub fn parse_time(raw: &str, bound: Bound) -> Result<DateTime<Utc>, String> {
    let raw = raw.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Ok(at.with_timezone(&Utc));
    }
    let problem = || "must be an RFC 3339 time (2024-05-01T12:00:00Z) or a date (2024-05-01)";
    let day = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| problem().to_owned())?;
    let day = match bound {
        Bound::From => day,
        Bound::To => day.succ_opt().ok_or_else(|| problem().to_owned())?,
    };
    Ok(day.and_time(chrono::NaiveTime::MIN).and_utc())
}

/// A chrono time as a protobuf timestamp.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        // Sub-second nanos are below 2e9, which always fits an i32.
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn squash(raw: &str) -> String {
    raw.trim()
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_names_read_in_any_spelling() {
        for raw in [
            "lastActivity",
            "last-activity",
            "last_activity",
            "LASTACTIVITY",
        ] {
            assert_eq!(parse_sort(raw), Ok(SortField::LastActivity), "{raw}");
        }
        assert_eq!(parse_sort("duration"), Ok(SortField::Duration));
        assert!(parse_sort("size").is_err());
        assert_eq!(parse_order("ASC"), Ok(SortOrder::Ascending));
        assert!(parse_order("up").is_err());
        assert_eq!(parse_grouping("day"), Ok(UsageGrouping::Day));
        assert!(parse_grouping("week").is_err());
        assert_eq!(parse_bool("false"), Ok(false));
        assert!(parse_bool("yes").is_err());
    }

    #[test]
    fn dates_cover_whole_utc_days_and_rfc3339_keeps_its_instant() {
        let from = parse_time("2024-05-01", Bound::From).map(|t| t.to_rfc3339());
        let to = parse_time("2024-05-01", Bound::To).map(|t| t.to_rfc3339());
        assert_eq!(from.as_deref(), Ok("2024-05-01T00:00:00+00:00"));
        assert_eq!(to.as_deref(), Ok("2024-05-02T00:00:00+00:00"));
        let at = parse_time("2024-05-01T14:30:00+02:00", Bound::To).map(|t| t.to_rfc3339());
        assert_eq!(at.as_deref(), Ok("2024-05-01T12:30:00+00:00"));
        assert!(parse_time("yesterday", Bound::From).is_err());
        assert!(parse_time("2024-13-01", Bound::From).is_err());
    }
}
