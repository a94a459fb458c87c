//! Rebasing stays near-linear whatever the mappings look like: the crafted file with one
//! mapping spanning the address space under thousands of small ones (`huge-mapping` of
//! `urec_format::hostile`) is rebased frame by frame, and the work the index reports (cells
//! and mappings examined, a count that does not depend on the machine) is bounded by
//! O(lookups · log² mappings). The scan it replaces examined every mapping below the address
//! for each frame: n² · 32 for n stacks.

use urec_format::hostile::{self, Scale, HUGE_MAPPING_BASE};
use urec_format::{Reader, Record};
use urec_report::rebase::AddressSpaces;

#[test]
fn one_huge_mapping_rebases_in_near_linear_work() {
    let scale = Scale {
        processes: 48 * 4000,
        ..Scale::default()
    };
    let file = hostile::all(scale)
        .into_iter()
        .find(|c| c.name == "huge-mapping")
        .expect("the huge-mapping class");
    let mut reader = Reader::from_bytes(file.bytes).expect("a valid file");
    let mut spaces = AddressSpaces::new();
    let mut stacks = Vec::new();
    let mut events = Vec::new();
    for record in reader.records() {
        let record = record.expect("a valid record");
        spaces.apply(&record);
        match record {
            Record::Stack(s) => stacks.push(s),
            Record::Event(e) => events.push(e),
            _ => {}
        }
    }
    let n = stacks.len() as u64;
    assert_eq!(n, 4000);
    let mut lookups = 0u64;
    for e in &events {
        let stack = &stacks[e.stack.expect("every call has a stack") as usize];
        for &addr in &stack.frames {
            let m = spaces.lookup(e.pid, e.time_ns, addr).expect("mapped");
            // The small mapping, recorded after the huge one, is in force.
            assert_eq!(m.path, "/small");
            assert_eq!(m.offset.0, (addr.0 - HUGE_MAPPING_BASE) % 0x2000);
            lookups += 1;
        }
    }
    assert_eq!(lookups, 32 * n);
    let log = u64::from((n + 1).ilog2()) + 1;
    let bound = lookups * 4 * log * log;
    let work = spaces.work();
    println!(
        "{lookups} lookups over {} mappings: work {work} (bound {bound})",
        n + 1
    );
    assert!(work <= bound, "work {work} > {bound}");
    // What the backward scan would have cost: every small mapping below each frame.
    assert!(work * 50 < lookups * n / 2, "no better than a scan");
}

/// Mappings and lookups interleaved (a mapping, then a call that uses it, and again) cost no
/// index rebuild per mapping: the same bound holds.
#[test]
fn interleaved_mappings_and_lookups_stay_near_linear() {
    use urec_format::{Avma, FileOffset, Mapping};
    let mut spaces = AddressSpaces::new();
    let n = 20_000u64;
    let mut lookups = 0u64;
    for i in 0..n {
        let start = 0x10_0000 + i * 0x2000;
        spaces.apply(&Record::Mapping(Mapping {
            pid: 1,
            time_ns: i,
            start: Avma(start),
            end: Avma(start + 0x1000),
            offset: FileOffset(0),
            path: "/lib".into(),
            dev: 0,
            inode: 0,
            build_id: None,
        }));
        let m = spaces.lookup(1, i, Avma(start + 8)).expect("just mapped");
        assert_eq!(m.offset.0, 8);
        lookups += 1;
    }
    let log = u64::from(n.ilog2()) + 1;
    let work = spaces.work();
    assert!(work <= lookups * 4 * log * log, "work {work}");
}
