use super::*;

impl LogFiles {
    /// Read as a replication reader would, and also from the files alone.
    fn read_all(&self, from: u64, to: u64) -> Result<Vec<Entry>, LogError> {
        let cached = self.read(from, to, false)?;
        let saved = std::mem::take(&mut self.lock().cache);
        let stored = self.read(from, to, false);
        self.lock().cache = saved;
        assert_eq!(ids(&cached), ids(stored.as_ref().unwrap()));
        Ok(cached)
    }
}
use openraft::{CommittedLeaderId, EntryPayload};

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(edgerun_model::RaftRequest::new(
            edgerun_model::Command::Batch(Vec::new()),
        )),
    }
}

fn ids(v: &[Entry]) -> Vec<u64> {
    v.iter().map(|e| e.log_id.index).collect()
}

fn durable(l: &LogFiles, file: Option<Arc<File>>) {
    let file = file.unwrap();
    let (tx, rx) = mpsc::channel();
    l.when_durable(
        file,
        Box::new(move |r| {
            let _ = tx.send(r.is_ok());
        }),
    );
    assert_eq!(rx.recv().ok(), Some(true));
}

#[test]
fn appends_read_back_and_survive_a_reopen() {
    let d = tempfile::tempdir().unwrap();
    let (l, notes) = LogFiles::open(d.path(), None).unwrap();
    assert!(notes.is_empty() && l.is_empty() && l.last().is_none());
    // Nothing to append to an empty log: nothing to wait for, no file made.
    assert!(l.append(Vec::new()).unwrap().is_none());
    let f = l.append((0..10).map(|i| entry(1, i))).unwrap();
    durable(&l, f);
    let f = l.append((10..12).map(|i| entry(2, i))).unwrap();
    durable(&l, f);
    assert_eq!(ids(&l.read_all(3, 6).unwrap()), vec![3, 4, 5]);
    assert_eq!(l.last().map(|x| (x.leader_id.term, x.index)), Some((2, 11)));
    drop(l);
    let (l, notes) = LogFiles::open(d.path(), None).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(
        ids(&l.read_all(0, u64::MAX).unwrap()),
        (0..12).collect::<Vec<_>>()
    );
    assert_eq!(l.last().map(|x| x.index), Some(11));
    // A gap is refused and changes nothing.
    assert!(l.append([entry(2, 20)]).is_err());
    assert_eq!(l.len(), 12);
}

#[test]
fn truncate_and_purge_across_segments() {
    let d = tempfile::tempdir().unwrap();
    let (l, _) = LogFiles::open(d.path(), None).unwrap();
    // Three segments: each append larger than a segment starts the next one.
    for k in 0..3u64 {
        let f = l.append((k * 5..k * 5 + 5).map(|i| entry(1, i))).unwrap();
        durable(&l, f);
        l.lock().segments.values_mut().next_back().unwrap().len = SEGMENT_BYTES;
    }
    let segs = || scan(d.path(), Depth::Checksums).segments.len();
    assert_eq!(segs(), 3);
    // Cut inside the second segment: the third goes, the second is shortened.
    l.truncate(7).unwrap();
    assert_eq!(segs(), 2);
    assert_eq!(l.last().map(|x| x.index), Some(6));
    let f = l.append((7..9).map(|i| entry(3, i))).unwrap();
    durable(&l, f);
    assert_eq!(
        ids(&l.read_all(0, 100).unwrap()),
        (0..9).collect::<Vec<_>>()
    );
    assert_eq!(l.read_all(8, 9).unwrap()[0].log_id.leader_id.term, 3);
    // Purging up to 5 removes the first segment (0..=4); the one from 5 holds 6..=8.
    l.purge(5).unwrap();
    assert_eq!(segs(), 1, "{:?}", scan(d.path(), Depth::Headers).segments);
    l.purge(6).unwrap();
    assert_eq!(ids(&l.read_all(0, 100).unwrap()), vec![7, 8]);
    drop(l);
    // Reopened with the purge point: the entries before it are not part of the log.
    let (l, _) = LogFiles::open(d.path(), Some(6)).unwrap();
    assert_eq!(ids(&l.read_all(0, 100).unwrap()), vec![7, 8]);
    // Purging past the end (a snapshot installed) empties it; appends go on after it.
    l.purge(20).unwrap();
    assert!(l.is_empty());
    assert_eq!(segs(), 0);
    let f = l.append([entry(4, 21)]).unwrap();
    durable(&l, f);
    drop(l);
    let (l, _) = LogFiles::open(d.path(), Some(20)).unwrap();
    assert_eq!(ids(&l.read_all(0, 100).unwrap()), vec![21]);
}

#[test]
fn a_torn_tail_is_dropped_and_damage_refuses_to_open() {
    let d = tempfile::tempdir().unwrap();
    let (l, _) = LogFiles::open(d.path(), None).unwrap();
    let f = l.append((0..5).map(|i| entry(1, i))).unwrap();
    durable(&l, f);
    drop(l);
    let path = d.path().join(seg_name(0));
    let full = std::fs::read(&path).unwrap();
    // A write cut short: the last record lost its last bytes.
    std::fs::write(&path, &full[..full.len() - 3]).unwrap();
    let (l, notes) = LogFiles::open(d.path(), None).unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(l.last().map(|x| x.index), Some(3));
    let f = l.append([entry(1, 4)]).unwrap();
    durable(&l, f);
    drop(l);
    assert_eq!(std::fs::read(&path).unwrap(), full);
    // A flipped byte inside a record: doctor names the entry, open refuses.
    let mut bad = full.clone();
    let at = MAGIC.len() + HEADER + 2;
    bad[at] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    let s = scan(d.path(), Depth::Decode);
    assert!(
        s.problems
            .iter()
            .any(|p| p.contains("log entry 0") && p.contains("does not decode")),
        "{:?}",
        s.problems
    );
    let err = LogFiles::open(d.path(), None).err().unwrap();
    assert!(matches!(err, LogError::Damaged(_)), "{err}");
    assert!(err.to_string().contains("damaged"), "{err}");
    // Refusing left the file as it was.
    assert_eq!(std::fs::read(&path).unwrap(), bad);
}

#[test]
fn write_fresh_makes_a_log_open_reads() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(
        write_fresh(d.path(), (3..8).map(|i| entry(1, i))).unwrap(),
        5
    );
    let (l, _) = LogFiles::open(d.path(), Some(2)).unwrap();
    assert_eq!(
        ids(&l.read_all(0, 100).unwrap()),
        (3..8).collect::<Vec<_>>()
    );
    // A purge point past the first entries skips them.
    drop(l);
    let (l, _) = LogFiles::open(d.path(), Some(4)).unwrap();
    assert_eq!(ids(&l.read_all(0, 100).unwrap()), vec![5, 6, 7]);
    // ... but one before them means entries are missing.
    drop(l);
    let d2 = tempfile::tempdir().unwrap();
    write_fresh(d2.path(), (3..8).map(|i| entry(1, i))).unwrap();
    let err = LogFiles::open(d2.path(), Some(0)).err().unwrap();
    assert!(matches!(err, LogError::Damaged(_)), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn the_apply_takes_cached_entries_and_later_reads_come_from_the_files() {
    let d = tempfile::tempdir().unwrap();
    let (l, _) = LogFiles::open(d.path(), None).unwrap();
    let f = l.append((0..6).map(|i| entry(1, i))).unwrap();
    durable(&l, f);
    assert_eq!(l.lock().cache.len(), 6);
    // A replication reader copies; the cache keeps them.
    assert_eq!(ids(&l.read(0, 3, false).unwrap()), vec![0, 1, 2]);
    assert_eq!(l.lock().cache.len(), 6);
    // The apply takes them out.
    assert_eq!(ids(&l.read(0, 4, true).unwrap()), vec![0, 1, 2, 3]);
    assert_eq!(
        l.lock().cache.keys().copied().collect::<Vec<_>>(),
        vec![4, 5]
    );
    // A reader that comes late gets them from the files, whole.
    let late = l.read(0, 6, false).unwrap();
    assert_eq!(ids(&late), (0..6).collect::<Vec<_>>());
    assert!(late.iter().all(|e| e.log_id.leader_id.term == 1));
    // Truncating and purging drop cached entries too.
    l.truncate(5).unwrap();
    l.purge(3).unwrap();
    assert_eq!(l.lock().cache.keys().copied().collect::<Vec<_>>(), vec![4]);
    let f = l.lock();
    assert_eq!(
        f.cache_bytes,
        f.cache.values().map(|(_, b)| b).sum::<usize>()
    );
}
