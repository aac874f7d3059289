//! Async operation records (`ProcessRecord`) with bounded retention. Upstream keeps them
//! forever; we evict finished records past an age and cap the total count.

use std::collections::{HashMap, VecDeque};

use koupleless_protocol::{ProcessRecord, ProcessStatus};

/// Retention limits.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Most records kept; the oldest finished ones go first.
    pub max_records: usize,
    /// Finished records older than this (ms since they ended) are evicted.
    pub max_age_ms: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_records: 1000,
            max_age_ms: 3_600_000,
        }
    }
}

/// Why a record could not be created.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpsError {
    /// The request id was used before.
    #[error("The request corresponding to the requestId({0}) has been executed.")]
    Duplicate(String),
}

/// The record table.
#[derive(Debug, Default)]
pub struct OpsTable {
    records: HashMap<String, ProcessRecord>,
    order: VecDeque<String>,
    retention: Retention,
}

fn finished(r: &ProcessRecord) -> bool {
    matches!(r.status, ProcessStatus::Succeeded | ProcessStatus::Failed)
}

impl OpsTable {
    /// An empty table.
    pub fn new(retention: Retention) -> Self {
        OpsTable {
            records: HashMap::new(),
            order: VecDeque::new(),
            retention,
        }
    }

    /// Creates an `INITIALIZED` record.
    pub fn create(
        &mut self,
        request_id: &str,
        meta: serde_json::Value,
        thread_name: String,
        now: i64,
    ) -> Result<ProcessRecord, OpsError> {
        self.evict(now);
        if self.records.contains_key(request_id) {
            return Err(OpsError::Duplicate(request_id.to_owned()));
        }
        self.make_room();
        let rec = ProcessRecord {
            ark_biz_meta: Some(meta),
            elapsed_time: 0,
            end_time: None,
            end_timestamp: 0,
            error_code: None,
            message: None,
            request_id: request_id.to_owned(),
            start_time: Some(now),
            start_timestamp: now,
            status: ProcessStatus::Initialized,
            thread_name: Some(thread_name),
            throwable: None,
        };
        self.records.insert(request_id.to_owned(), rec.clone());
        self.order.push_back(request_id.to_owned());
        Ok(rec)
    }

    /// Marks a record as running.
    pub fn executing(&mut self, request_id: &str) {
        if let Some(r) = self.records.get_mut(request_id) {
            r.status = ProcessStatus::Executing;
        }
    }

    /// Ends a record. Unlike upstream, a lock conflict ends as `FAILED` too.
    pub fn finish(
        &mut self,
        request_id: &str,
        outcome: Result<(), (String, koupleless_protocol::ErrorCode)>,
        now: i64,
    ) {
        if let Some(r) = self.records.get_mut(request_id) {
            r.end_time = Some(now);
            r.end_timestamp = now;
            r.elapsed_time = now - r.start_timestamp;
            match outcome {
                Ok(()) => r.status = ProcessStatus::Succeeded,
                Err((message, code)) => {
                    r.status = ProcessStatus::Failed;
                    r.message = Some(message);
                    r.error_code = Some(code.to_string());
                }
            }
        }
    }

    /// Looks a record up.
    pub fn get(&mut self, request_id: &str, now: i64) -> Option<ProcessRecord> {
        self.evict(now);
        self.records.get(request_id).cloned()
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no records are held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn evict(&mut self, now: i64) {
        let max_age = self.retention.max_age_ms;
        let records = &mut self.records;
        self.order.retain(|id| {
            let expired = records
                .get(id)
                .is_some_and(|r| finished(r) && r.end_timestamp + max_age <= now);
            if expired {
                records.remove(id);
            }
            records.contains_key(id)
        });
    }

    fn make_room(&mut self) {
        // Over the cap: drop the oldest finished records; running ones are never dropped.
        while self.records.len() >= self.retention.max_records {
            let Some(pos) = self
                .order
                .iter()
                .position(|id| self.records.get(id).is_some_and(finished))
            else {
                break;
            };
            if let Some(id) = self.order.remove(pos) {
                self.records.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use koupleless_protocol::ErrorCode;
    use serde_json::json;

    #[test]
    fn lifecycle_and_duplicates() {
        let mut t = OpsTable::new(Retention::default());
        let r = t.create("r1", json!({}), "w-1".into(), 100).unwrap();
        assert_eq!(r.status, ProcessStatus::Initialized);
        assert_eq!(
            t.create("r1", json!({}), "w".into(), 101),
            Err(OpsError::Duplicate("r1".into()))
        );
        t.executing("r1");
        t.finish("r1", Ok(()), 150);
        let r = t.get("r1", 151).unwrap();
        assert_eq!(
            (r.status, r.elapsed_time, r.end_time),
            (ProcessStatus::Succeeded, 50, Some(150))
        );
    }

    #[test]
    fn conflict_ends_failed_not_initialized() {
        let mut t = OpsTable::new(Retention::default());
        t.create("r", json!({}), "w".into(), 0).unwrap();
        t.finish(
            "r",
            Err(("conflict".into(), ErrorCode::InstallBizExecuting)),
            5,
        );
        let r = t.get("r", 6).unwrap();
        assert_eq!(r.status, ProcessStatus::Failed);
        assert_eq!(r.error_code.as_deref(), Some("Arklet.InstallBizExecuting"));
    }

    #[test]
    fn eviction_by_age_and_count() {
        let mut t = OpsTable::new(Retention {
            max_records: 3,
            max_age_ms: 1000,
        });
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            t.create(id, json!({}), "w".into(), i as i64).unwrap();
        }
        // "b" still running: the cap evicts the oldest *finished* record only.
        t.finish("a", Ok(()), 10);
        t.finish("c", Ok(()), 10);
        t.create("d", json!({}), "w".into(), 20).unwrap();
        assert!(t.get("a", 20).is_none());
        assert!(t.get("b", 20).is_some());
        assert_eq!(t.len(), 3);
        // Age: "c" ended at 10, gone at 1010; "b" (running) stays.
        assert!(t.get("c", 1010).is_none());
        assert!(t.get("b", 5000).is_some());
    }
}
