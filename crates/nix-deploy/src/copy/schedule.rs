//! Which missing paths to upload next, so that several connections can
//! work at once without ever sending a path before its references are valid
//! on the node. Paths are grouped into batches (one AddMultipleToStore
//! each); a batch may hold a path together with the references it depends
//! on, in order, because the daemon imports a batch sequentially.

use std::collections::{BTreeMap, VecDeque};

use nix_wire::daemon::PathInfo;
use nix_wire::StorePath;

/// The upload plan of one copy, shared by its workers.
pub(crate) struct Schedule {
    infos: Vec<PathInfo>,
    /// For each path, the missing paths that reference it.
    dependents: Vec<Vec<usize>>,
    /// For each path, how many of its missing references are not yet valid
    /// on the node.
    incomplete: Vec<usize>,
    scheduled: Vec<bool>,
    /// Unscheduled paths whose references are all valid on the node.
    ready: VecDeque<usize>,
    in_flight: usize,
    done: usize,
}

/// Limits of one batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// Stop adding paths once this many NAR bytes are in the batch.
    pub bytes: u64,
    /// Most paths in one batch.
    pub paths: usize,
}

impl Schedule {
    /// Plans the upload of `missing`: paths absent on the node, with their
    /// local path infos. References outside `missing` are taken to be valid
    /// on the node already.
    pub(crate) fn new(missing: Vec<PathInfo>) -> Self {
        let index: BTreeMap<StorePath, usize> = missing
            .iter()
            .enumerate()
            .map(|(i, info)| (info.path.clone(), i))
            .collect();
        let mut dependents = vec![Vec::new(); missing.len()];
        let mut incomplete = vec![0; missing.len()];
        for (i, info) in missing.iter().enumerate() {
            for r in &info.references {
                match index.get(r) {
                    Some(&d) if d != i => {
                        dependents[d].push(i);
                        incomplete[i] += 1;
                    }
                    _ => {}
                }
            }
        }
        let ready = (0..missing.len()).filter(|&i| incomplete[i] == 0).collect();
        Self {
            scheduled: vec![false; missing.len()],
            infos: missing,
            dependents,
            incomplete,
            ready,
            in_flight: 0,
            done: 0,
        }
    }

    /// A path's local info.
    pub(crate) fn info(&self, i: usize) -> &PathInfo {
        &self.infos[i]
    }

    /// Whether every path has been uploaded.
    pub(crate) fn is_finished(&self) -> bool {
        self.done == self.infos.len()
    }

    /// Takes the next batch, in an order the daemon can import: ready paths
    /// first, then paths whose last missing references joined this batch.
    /// Empty when nothing can start now. A batch past its byte limit still
    /// grows while it is the only work there can be (nothing else ready or in
    /// flight, a single path unlocked by it: a chain), since a batch boundary
    /// there only makes the node wait for the next request.
    pub(crate) fn next_batch(&mut self, limits: BatchLimits) -> Vec<usize> {
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        // How many references of each candidate are in this batch.
        let mut in_batch: BTreeMap<usize, usize> = BTreeMap::new();
        let mut unlocked: VecDeque<usize> = VecDeque::new();
        while batch.len() < limits.paths {
            let alone = self.in_flight == 0 && self.ready.is_empty() && unlocked.len() <= 1;
            if bytes >= limits.bytes && !alone {
                break;
            }
            let Some(i) = unlocked.pop_front().or_else(|| self.ready.pop_front()) else {
                break;
            };
            if self.scheduled[i] {
                continue;
            }
            self.scheduled[i] = true;
            bytes += self.infos[i].nar_size;
            batch.push(i);
            for &d in &self.dependents[i] {
                let n = in_batch.entry(d).or_default();
                *n += 1;
                if *n == self.incomplete[d] && !self.scheduled[d] {
                    unlocked.push_back(d);
                }
            }
        }
        if !batch.is_empty() {
            self.in_flight += 1;
        }
        batch
    }

    /// Records that `batch` is valid on the node now.
    pub(crate) fn complete(&mut self, batch: &[usize]) {
        self.in_flight -= 1;
        self.mark_valid(batch);
    }

    fn mark_valid(&mut self, paths: &[usize]) {
        self.done += paths.len();
        for &i in paths {
            for k in 0..self.dependents[i].len() {
                let d = self.dependents[i][k];
                self.incomplete[d] -= 1;
                if self.incomplete[d] == 0 && !self.scheduled[d] {
                    self.ready.push_back(d);
                }
            }
        }
    }

    /// Ends a failed batch: `valid` paths count as uploaded, the others are
    /// scheduled again (ahead of later paths, in batch order, which is a
    /// valid import order).
    pub(crate) fn retry(&mut self, batch: &[usize], valid: &[usize]) {
        self.in_flight -= 1;
        let (done, again): (Vec<usize>, Vec<usize>) = batch.iter().partition(|i| valid.contains(i));
        for &i in &again {
            self.scheduled[i] = false;
        }
        self.mark_valid(&done);
        for &i in again.iter().rev() {
            if self.incomplete[i] == 0 && !self.ready.contains(&i) {
                self.ready.push_front(i);
            }
        }
    }

    /// Whether a batch is in flight (so waiting may unlock more work).
    pub(crate) fn has_in_flight(&self) -> bool {
        self.in_flight > 0
    }

    /// Paths not uploaded yet (for messages).
    pub(crate) fn unfinished(&self) -> Vec<StorePath> {
        (0..self.infos.len())
            .filter(|&i| !self.scheduled[i])
            .map(|i| self.infos[i].path.clone())
            .collect()
    }

    /// The first path not uploaded yet, if any.
    pub(crate) fn first_unfinished(&self) -> Option<StorePath> {
        self.unfinished().into_iter().next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn path(n: usize) -> StorePath {
        StorePath::from_base_name(&format!("{}-p{n}", "0".repeat(32))).unwrap()
    }

    /// Infos for a graph given as (path, references) pairs.
    fn graph(edges: &[(usize, &[usize])]) -> Vec<PathInfo> {
        edges
            .iter()
            .map(|(p, refs)| PathInfo {
                path: path(*p),
                deriver: None,
                nar_hash: nix_wire::Sha256Hash::digest(b""),
                references: refs.iter().map(|r| path(*r)).collect::<BTreeSet<_>>(),
                registration_time: 0,
                nar_size: 10,
                ultimate: false,
                signatures: BTreeSet::new(),
                ca: None,
            })
            .collect()
    }

    fn names(s: &Schedule, batch: &[usize]) -> Vec<String> {
        batch
            .iter()
            .map(|&i| s.info(i).path.name().to_owned())
            .collect()
    }

    const ALL: BatchLimits = BatchLimits {
        bytes: u64::MAX,
        paths: usize::MAX,
    };

    #[test]
    fn one_batch_holds_everything_in_dependency_order() {
        // 3 -> 2 -> 1, 3 -> 1, 1 -> 1 (self), 4 alone; 9 is not missing.
        let mut s = Schedule::new(graph(&[(3, &[2, 1]), (2, &[1, 9]), (1, &[1]), (4, &[])]));
        let b = s.next_batch(ALL);
        assert_eq!(names(&s, &b), ["p1", "p2", "p3", "p4"]);
        assert!(s.next_batch(ALL).is_empty());
        assert!(!s.is_finished());
        s.complete(&b);
        assert!(s.is_finished());
    }

    #[test]
    fn small_batches_wait_for_their_references() {
        let mut s = Schedule::new(graph(&[(1, &[]), (2, &[1]), (3, &[]), (4, &[2, 3])]));
        let one = BatchLimits {
            bytes: 10,
            paths: 8,
        };
        let a = s.next_batch(one);
        assert_eq!(names(&s, &a), ["p1"]);
        let b = s.next_batch(one);
        assert_eq!(names(&s, &b), ["p3"]);
        // p2 waits for p1, p4 for p2.
        assert!(s.next_batch(one).is_empty());
        assert!(s.has_in_flight());
        s.complete(&b);
        assert!(s.next_batch(one).is_empty());
        s.complete(&a);
        let c = s.next_batch(ALL);
        assert_eq!(names(&s, &c), ["p2", "p4"]);
        s.complete(&c);
        assert!(s.is_finished());
    }

    #[test]
    fn a_path_referencing_a_batch_in_flight_waits() {
        let mut s = Schedule::new(graph(&[(1, &[]), (2, &[]), (3, &[1, 2])]));
        let a = s.next_batch(BatchLimits { bytes: 1, paths: 1 });
        let b = s.next_batch(ALL);
        assert_eq!(names(&s, &a), ["p1"]);
        assert_eq!(names(&s, &b), ["p2"]);
        s.complete(&b);
        assert!(s.next_batch(ALL).is_empty());
        s.complete(&a);
        let c = s.next_batch(ALL);
        assert_eq!(names(&s, &c), ["p3"]);
    }

    #[test]
    fn a_chain_goes_as_one_batch_but_a_fan_out_stops_at_the_limit() {
        let small = BatchLimits {
            bytes: 20,
            paths: 100,
        };
        // 1 <- 2 <- 3 <- 4 <- 5: nothing else could run meanwhile.
        let mut chain = Schedule::new(graph(&[
            (1, &[]),
            (2, &[1]),
            (3, &[2]),
            (4, &[3]),
            (5, &[4]),
        ]));
        assert_eq!(chain.next_batch(small).len(), 5);
        // 1 <- {2, 3, 4, 5}: the limit leaves work for others.
        let mut fan = Schedule::new(graph(&[
            (1, &[]),
            (2, &[1]),
            (3, &[1]),
            (4, &[1]),
            (5, &[1]),
        ]));
        assert_eq!(fan.next_batch(small).len(), 2);
        // A batch in flight elsewhere may unlock work: no growing then.
        let mut two = Schedule::new(graph(&[(1, &[]), (2, &[]), (3, &[2]), (4, &[3])]));
        let first = two.next_batch(BatchLimits { bytes: 1, paths: 1 });
        assert_eq!(first.len(), 1);
        assert_eq!(two.next_batch(small).len(), 2);
    }

    #[test]
    fn retry_requeues_what_did_not_arrive() {
        let mut s = Schedule::new(graph(&[(1, &[]), (2, &[1]), (3, &[2])]));
        let a = s.next_batch(ALL);
        // The daemon imported p1 and failed on p2.
        s.retry(&a, &[a[0]]);
        let b = s.next_batch(ALL);
        assert_eq!(names(&s, &b), ["p2", "p3"]);
        s.complete(&b);
        assert!(s.is_finished());
        assert!(!s.has_in_flight());
    }
}
