//! Applying a set of schedules (`xylem schedule apply FILE`): what the
//! store must do to hold exactly what the file says — add, change, keep
//! or (with prune) remove each schedule — shown before it is done, and
//! done idempotently: applying the same file twice changes nothing the
//! second time, and a schedule's place in time (its last run, and its
//! next run unless its timing changed) survives an edit.

use serde::Serialize;

use super::model::Schedule;
use crate::store::{ScheduleStore, StoreError};
use crate::time::Millis;

/// One field that differs, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// The field's name (`task`, `args`, `spec`, `enabled`, ...).
    pub field: String,
    /// The stored value (`null`: unset).
    pub from: serde_json::Value,
    /// The value asked for.
    pub to: serde_json::Value,
}

/// What applying does to one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    /// Not in the store: created.
    Add {
        /// The schedule as it will be written.
        schedule: Box<Schedule>,
    },
    /// In the store, defined otherwise: these fields change.
    Change {
        /// Its name.
        name: String,
        /// What differs.
        changes: Vec<FieldChange>,
        /// The schedule as asked for.
        #[serde(skip)]
        desired: Box<Schedule>,
    },
    /// In the store as asked: nothing to do.
    Keep {
        /// Its name.
        name: String,
    },
    /// In the store, not in the set, and pruning: deleted.
    Remove {
        /// Its name.
        name: String,
    },
}

impl Step {
    /// The schedule's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Add { schedule } => &schedule.name,
            Self::Change { name, .. } | Self::Keep { name } | Self::Remove { name } => name,
        }
    }
}

/// Fields that say where a schedule stands, not what it is: never a
/// change.
const STANDING: [&str; 5] = ["name", "anchor", "last_run", "next_run", "version"];

impl Schedule {
    /// The fields in which `desired` defines another schedule than this
    /// one (arguments compared as JSON, not as text).
    pub fn definition_changes(&self, desired: &Schedule) -> Vec<FieldChange> {
        let (from, to) = (definition(self), definition(desired));
        let mut fields: Vec<&String> = from.keys().chain(to.keys()).collect();
        fields.sort();
        fields.dedup();
        fields
            .into_iter()
            .filter_map(|field| {
                let (a, b) = (from.get(field), to.get(field));
                (a != b).then(|| FieldChange {
                    field: field.clone(),
                    from: a.cloned().unwrap_or(serde_json::Value::Null),
                    to: b.cloned().unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }

    /// This schedule redefined as `desired`, keeping where it stands: its
    /// version (the edit is a compare-and-set on it) and last run; its
    /// anchor and next run too, unless its timing changed or it is being
    /// enabled — then they count from `now`.
    pub fn redefined(&self, desired: &Schedule, now: Millis) -> Schedule {
        let mut next = desired.clone();
        next.version = self.version;
        next.last_run = self.last_run;
        if desired.spec == self.spec && (self.enabled || !desired.enabled) {
            next.anchor = self.anchor;
            next.next_run = self.next_run;
        } else {
            next.anchor = if desired.spec == self.spec {
                self.anchor
            } else {
                now
            };
            next.next_run = desired.spec.next_after(now, next.anchor).ok().flatten();
        }
        next
    }
}

/// A schedule's definition as a JSON object, its arguments parsed.
fn definition(schedule: &Schedule) -> serde_json::Map<String, serde_json::Value> {
    let mut doc = match serde_json::to_value(schedule) {
        Ok(serde_json::Value::Object(doc)) => doc,
        _ => serde_json::Map::new(),
    };
    for field in STANDING {
        doc.remove(field);
    }
    if let Some(serde_json::Value::String(text)) = doc.get("args")
        && let Ok(args) = serde_json::from_str::<serde_json::Value>(text)
    {
        doc.insert("args".to_owned(), args);
    }
    doc
}

/// The steps that make `current` (the store's schedules) into `desired`;
/// with `prune`, schedules not in `desired` are removed, else kept as
/// they are and not listed. In `desired`'s order, removals last.
pub fn plan(current: &[Schedule], desired: &[Schedule], prune: bool) -> Vec<Step> {
    let mut steps: Vec<Step> = desired
        .iter()
        .map(|want| match current.iter().find(|s| s.name == want.name) {
            None => Step::Add {
                schedule: Box::new(want.clone()),
            },
            Some(have) => {
                let changes = have.definition_changes(want);
                if changes.is_empty() {
                    Step::Keep {
                        name: want.name.clone(),
                    }
                } else {
                    Step::Change {
                        name: want.name.clone(),
                        changes,
                        desired: Box::new(want.clone()),
                    }
                }
            }
        })
        .collect();
    if prune {
        steps.extend(
            current
                .iter()
                .filter(|have| desired.iter().all(|want| want.name != have.name))
                .map(|have| Step::Remove {
                    name: have.name.clone(),
                }),
        );
    }
    steps
}

/// Why a step could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Someone else wrote the schedule meanwhile (created it, or kept
    /// editing it).
    #[error("schedule `{0}` changed while being applied (added or edited elsewhere): apply again")]
    Conflict(String),
}

/// Carries out `steps` at `now`, in order. A change is a compare-and-set
/// on the version read, tried again (from a fresh read) when a beat moved
/// the schedule on meanwhile.
pub async fn apply(
    store: &dyn ScheduleStore,
    steps: &[Step],
    now: Millis,
) -> Result<(), ApplyError> {
    for step in steps {
        match step {
            Step::Keep { .. } => {}
            Step::Add { schedule } => {
                if store.put_schedule(schedule).await?.is_none() {
                    return Err(ApplyError::Conflict(schedule.name.clone()));
                }
            }
            Step::Remove { name } => {
                store.remove_schedule(name).await?;
            }
            Step::Change { name, desired, .. } => {
                let mut written = false;
                for _ in 0..10 {
                    let Some(have) = store.get_schedule(name).await? else {
                        return Err(ApplyError::Conflict(name.clone()));
                    };
                    if store
                        .put_schedule(&have.redefined(desired, now))
                        .await?
                        .is_some()
                    {
                        written = true;
                        break;
                    }
                }
                if !written {
                    return Err(ApplyError::Conflict(name.clone()));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Spec;

    fn schedule(name: &str, spec: Spec) -> Schedule {
        let mut s = Schedule::new(name, "hello.echo", spec, 1_000).unwrap();
        s.args = r#"{"a": 1}"#.to_owned();
        s
    }

    #[test]
    fn a_plan_adds_changes_keeps_and_prunes() {
        let every = Spec::Every { every_ms: 60_000 };
        let mut stored = schedule("kept", every.clone());
        stored.version = 4;
        stored.last_run = Some(60_000);
        let changed = schedule("changed", every.clone());
        let gone = schedule("gone", every.clone());
        let current = [stored.clone(), changed.clone(), gone];

        // The same arguments written otherwise are the same.
        let mut kept = schedule("kept", every.clone());
        kept.args = r#"{"a":1}"#.to_owned();
        let mut retimed = schedule("changed", Spec::Every { every_ms: 5_000 });
        retimed.priority = Some(7);
        let added = schedule("new", every);
        let desired = [kept, retimed.clone(), added];

        let steps = plan(&current, &desired, false);
        let names: Vec<(&str, &str)> = steps
            .iter()
            .map(|s| {
                let action = match s {
                    Step::Add { .. } => "add",
                    Step::Change { .. } => "change",
                    Step::Keep { .. } => "keep",
                    Step::Remove { .. } => "remove",
                };
                (s.name(), action)
            })
            .collect();
        assert_eq!(
            names,
            [("kept", "keep"), ("changed", "change"), ("new", "add")]
        );
        let Step::Change { changes, .. } = &steps[1] else {
            unreachable!()
        };
        let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["priority", "spec"]);
        assert_eq!(changes[0].from, serde_json::Value::Null);
        assert_eq!(changes[0].to, serde_json::json!(7));
        assert_eq!(
            plan(&current, &desired, true).last().unwrap().name(),
            "gone"
        );
    }

    #[test]
    fn a_redefined_schedule_keeps_its_place_unless_its_timing_changed() {
        let mut have = schedule("s", Spec::Every { every_ms: 60_000 });
        have.version = 3;
        have.last_run = Some(61_000);
        have.next_run = Some(121_000);
        let mut want = schedule("s", Spec::Every { every_ms: 60_000 });
        want.queue = Some("reports".to_owned());
        let next = have.redefined(&want, 100_000);
        assert_eq!(
            (next.version, next.last_run, next.next_run, next.anchor),
            (3, Some(61_000), Some(121_000), 1_000)
        );
        assert_eq!(next.queue.as_deref(), Some("reports"));
        let want = schedule("s", Spec::Every { every_ms: 10_000 });
        let next = have.redefined(&want, 100_000);
        assert_eq!((next.anchor, next.next_run), (100_000, Some(110_000)));
    }
}
