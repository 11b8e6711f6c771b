//! Periodic jobs: which slots of a job are due, and what to do with each.
//!
//! The leader asks [`decide`] every tick for each job; the answer goes to Raft as one `Fire`
//! command, and the state machine refuses any slot at or before the job's last decided one.
//! So a slot is fired at most once across leaders, and a new leader continues from the last
//! committed decision: the slots that passed while nobody led are "missed" and handled by the
//! job's misfire policy.
//!
//! A slot decided within [`ON_TIME_MS`] of its time is on time and fires. A later one is
//! missed: `skip` skips it, `fire_once` fires only the latest of a run of missed slots,
//! `fire_all` fires each. Missed slots older than the job's `misfire_deadline_ms` are never
//! fired (nor listed one by one: the decision starts at the deadline). Overlap (`forbid`) is
//! checked by the state machine against the previous fire's task when the slot is applied.

use std::str::FromStr;

use chrono::TimeZone;
use edgerun_model::{Job, Misfire, SlotDecision};

/// A slot decided this late is still on time.
pub const ON_TIME_MS: u64 = 1000;

/// Parse a schedule (cron with seconds: 6 or 7 fields) and an IANA time zone.
pub fn parse(schedule: &str, timezone: &str) -> Result<(cron::Schedule, chrono_tz::Tz), String> {
    let fields = schedule.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err(format!(
            "schedule {schedule:?} has {fields} fields; give 6 (sec min hour day month weekday) or 7 (… year)"
        ));
    }
    let s =
        cron::Schedule::from_str(schedule).map_err(|e| format!("schedule {schedule:?}: {e}"))?;
    let tz = chrono_tz::Tz::from_str(timezone).map_err(|_| {
        format!("timezone {timezone:?} is not an IANA zone name (e.g. UTC, Europe/Berlin)")
    })?;
    Ok((s, tz))
}

/// The next slot strictly after `after_ms`, if the schedule has one.
pub fn next_slot(schedule: &cron::Schedule, tz: chrono_tz::Tz, after_ms: u64) -> Option<u64> {
    let start = tz.timestamp_millis_opt(after_ms as i64).single()?;
    schedule
        .after(&start)
        .next()
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
}

/// The slots of `job` due at `now_ms` that have not been decided, with what to do with each
/// (at most `max`, oldest first).
pub fn decide(job: &Job, now_ms: u64, max: usize) -> Result<Vec<SlotDecision>, String> {
    let (schedule, tz) = parse(&job.spec.schedule, &job.spec.timezone)?;
    Ok(decide_parsed(job, &schedule, tz, now_ms, max))
}

/// [`decide`] with the job's schedule already parsed (the leader keeps them parsed).
pub fn decide_parsed(
    job: &Job,
    schedule: &cron::Schedule,
    tz: chrono_tz::Tz,
    now_ms: u64,
    max: usize,
) -> Vec<SlotDecision> {
    let from = job.last_slot_ms.unwrap_or(job.created_at_ms);
    // Slots older than the deadline are never fired: start there.
    let from = from.max(now_ms.saturating_sub(job.spec.misfire_deadline_ms.max(ON_TIME_MS) + 1));
    let mut slots = Vec::new();
    let mut cursor = from;
    while slots.len() < max {
        match next_slot(schedule, tz, cursor) {
            Some(s) if s <= now_ms && s > cursor => {
                slots.push(s);
                cursor = s;
            }
            _ => break,
        }
    }
    let missed = |s: u64| now_ms.saturating_sub(s) > ON_TIME_MS;
    let last_missed = slots.iter().copied().filter(|s| missed(*s)).max();
    slots
        .into_iter()
        .map(|s| {
            let skip = if !missed(s) {
                None
            } else {
                match job.spec.misfire {
                    Misfire::Skip => Some("misfire".to_string()),
                    Misfire::FireAll => None,
                    Misfire::FireOnce if Some(s) == last_missed => None,
                    Misfire::FireOnce => Some("misfire".to_string()),
                }
            };
            SlotDecision { slot_ms: s, skip }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgerun_model::{JobSpec, Overlap, TaskSpec};

    fn job(misfire: Misfire, last: Option<u64>) -> Job {
        Job {
            id: 1,
            spec: JobSpec {
                name: "j".into(),
                schedule: "*/10 * * * * *".into(),
                timezone: "UTC".into(),
                task: TaskSpec::kernel("stats", "{}"),
                overlap: Overlap::Allow,
                misfire,
                misfire_deadline_ms: 35_000,
            },
            created_at_ms: 0,
            fires: 0,
            skipped: 0,
            last_slot_ms: last,
            last_fire_ms: None,
            last_task: None,
            recent: Default::default(),
        }
    }

    fn fired(d: &[SlotDecision]) -> Vec<u64> {
        d.iter()
            .filter(|x| x.skip.is_none())
            .map(|x| x.slot_ms)
            .collect()
    }

    #[test]
    fn on_time_slots_fire_and_missed_ones_follow_the_policy() {
        // last decided 1_000_000; now 1_050_500: slots …010, 020, 030, 040, 050 are due;
        // 050 is on time, 010 is older than the 35 s deadline and not even listed.
        let now = 1_050_500;
        let skip = decide(&job(Misfire::Skip, Some(1_000_000)), now, 100).expect("decide");
        assert_eq!(
            skip.iter().map(|d| d.slot_ms).collect::<Vec<_>>(),
            vec![1_020_000, 1_030_000, 1_040_000, 1_050_000]
        );
        assert_eq!(fired(&skip), vec![1_050_000]);
        let once = decide(&job(Misfire::FireOnce, Some(1_000_000)), now, 100).expect("decide");
        assert_eq!(fired(&once), vec![1_040_000, 1_050_000]);
        let all = decide(&job(Misfire::FireAll, Some(1_000_000)), now, 100).expect("decide");
        assert_eq!(
            fired(&all),
            vec![1_020_000, 1_030_000, 1_040_000, 1_050_000]
        );
        // nothing new is due right after a decision
        assert!(decide(&job(Misfire::FireAll, Some(1_050_000)), now, 100)
            .expect("decide")
            .is_empty());
    }

    #[test]
    fn schedules_and_zones_are_checked() {
        assert!(parse("* * * * *", "UTC").unwrap_err().contains("5 fields"));
        assert!(parse("x * * * * *", "UTC").is_err());
        assert!(parse("0 0 9 * * *", "Mars/Olympus")
            .unwrap_err()
            .contains("IANA"));
        let (s, tz) = parse("0 0 9 * * *", "Europe/Berlin").expect("parse");
        // 2026-07-01T00:00:00Z → 09:00 in Berlin (UTC+2) is 07:00Z
        let next = next_slot(&s, tz, 1_782_864_000_000).expect("next");
        assert_eq!(next, 1_782_864_000_000 + 7 * 3_600_000);
    }
}
