use super::*;
use core::sync::atomic::Ordering;

fn rx(status: u8, errors: u8, length: u16) -> RxDesc {
    RxDesc { status, errors, length, ..RxDesc::default() }
}

#[test]
fn descriptor_layouts_are_sixteen_bytes() {
    assert_eq!(core::mem::size_of::<RxDesc>(), 16);
    assert_eq!(core::mem::size_of::<TxDesc>(), 16);
}

#[test]
fn receive_descriptors_are_judged_without_trusting_the_device() {
    assert_eq!(classify_rx(&rx(0, 0, 60)), RxSlot::Empty);
    assert_eq!(classify_rx(&rx(RX_DD | RX_EOP, 0, 60)), RxSlot::Frame(60));
    assert_eq!(classify_rx(&rx(RX_DD | RX_EOP, 0, 1514)), RxSlot::Frame(1514));
    assert_eq!(classify_rx(&rx(RX_DD, 0, 60)), RxSlot::Bad(RxDrop::Fragment));
    assert_eq!(classify_rx(&rx(RX_DD | RX_EOP, 1, 60)), RxSlot::Bad(RxDrop::DeviceError));
    // Checksum-offload error bits are ignored (offload is off).
    assert_eq!(classify_rx(&rx(RX_DD | RX_EOP, 0x20, 60)), RxSlot::Frame(60));
    for bad_len in [0u16, 13, 1515, 2048, 2049, u16::MAX] {
        assert_eq!(classify_rx(&rx(RX_DD | RX_EOP, 0, bad_len)), RxSlot::Bad(RxDrop::BadLength), "{bad_len}");
    }
    // Every possible status/errors/length combination is judged without panicking and never yields a
    // length beyond the buffer.
    for status in 0..=255u8 {
        for errors in [0u8, 1, 0x20, 0x80, 0xFF] {
            for len in [0u16, 14, 100, 1514, 1515, 4000, u16::MAX] {
                if let RxSlot::Frame(l) = classify_rx(&rx(status, errors, len)) {
                    assert!(l <= BUF_SIZE && l >= MIN_FRAME);
                }
            }
        }
    }
}

#[test]
fn reclaim_keeps_one_descriptor_and_waits_for_the_slowest_sharer() {
    let n = 8;
    // Fresh ring: tail n-1, every cursor at 0 → nothing to give back.
    assert_eq!(reclaim_tail(7, [0u32].into_iter(), n), None);
    // One sharer read 3 frames (0, 1, 2): descriptors 7, 0, 1 go back, 2 is the spare.
    assert_eq!(reclaim_tail(7, [3u32].into_iter(), n), Some(2));
    // Two sharers: the one at 1 holds everything back but descriptor 7... tail 7, slowest at 1 → distance 2.
    assert_eq!(reclaim_tail(7, [5u32, 1].into_iter(), n), Some(0));
    // Slowest sharer right after the tail: nothing moves.
    assert_eq!(reclaim_tail(2, [3u32, 6].into_iter(), n), None);
    // No live sharer: nothing moves.
    assert_eq!(reclaim_tail(2, core::iter::empty(), n), None);
}

#[test]
fn a_recovered_sharer_rejoins_at_the_reader_furthest_ahead() {
    let n = 16;
    // Tail 3; live readers at 5 and 9 (9 is further from the tail): resume at 9.
    assert_eq!(rejoin_cursor(3, [5u32, 9].into_iter(), 4, n), 9);
    // Wrapping: tail 14, readers at 15 and 2 (2 is 4 ahead): resume at 2.
    assert_eq!(rejoin_cursor(14, [15u32, 2].into_iter(), 0, n), 2);
    // Nobody live: its own cursor.
    assert_eq!(rejoin_cursor(3, core::iter::empty(), 7, n), 7);
}

#[test]
fn a_dead_sharer_leaves_receive_reclaim() {
    let c = Control::default();
    c.live.store(0b111, Ordering::Relaxed);
    c.leave(2);
    assert_eq!(c.live.load(Ordering::Relaxed), 0b011);
    c.leave(1);
    assert_eq!(c.live.load(Ordering::Relaxed), 0b001);
    c.leave(MAX_SHARERS); // out of range: ignored
    assert_eq!(c.live.load(Ordering::Relaxed), 0b001);
}

/// Four sharers on real threads take the bakery lock 20 000 times between them: never two inside at once, and
/// each gets its turns.
#[test]
fn the_bakery_lock_excludes() {
    use core::sync::atomic::{AtomicU32, AtomicU64};
    let claims: [Claim; 4] = Default::default();
    let inside = AtomicU32::new(0);
    let counter = AtomicU64::new(0);
    std::thread::scope(|s| {
        for me in 0..4 {
            let (claims, inside, counter) = (&claims, &inside, &counter);
            s.spawn(move || {
                for _ in 0..5000 {
                    acquire(claims, me, |_| std::thread::yield_now());
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two sharers inside");
                    // A read-modify-write that is only correct under the lock.
                    let v = counter.load(Ordering::Relaxed);
                    counter.store(v + 1, Ordering::Relaxed);
                    inside.fetch_sub(1, Ordering::SeqCst);
                    release(claims, me);
                }
            });
        }
    });
    assert_eq!(counter.load(Ordering::SeqCst), 20_000);
    assert!(claims.iter().all(|c| snapshot(c) == (0, 0)));
}

/// A claim that is never given back (a sharer that keeps the lock, or sits in "choosing") makes waiters name
/// exactly that sharer; a huge ticket does not wrap the next one ahead of anybody.
#[test]
fn waiters_name_the_holder_and_huge_tickets_saturate() {
    let claims: [Claim; 3] = Default::default();
    claims[2].number.store(1, Ordering::SeqCst);
    let mut named = std::vec::Vec::new();
    let mut turns = 0;
    // Sharer 0 waits for 2 (ticket 1 < its 2): give up after a few turns by releasing 2, as the monitor would.
    acquire(&claims, 0, |j| {
        named.push(j);
        turns += 1;
        if turns == 5 {
            claims[2].number.store(0, Ordering::SeqCst);
        }
    });
    assert!(named.iter().all(|&j| j == 2) && named.len() == 5);
    release(&claims, 0);
    claims[1].choosing.store(1, Ordering::SeqCst);
    let mut named = std::vec::Vec::new();
    acquire(&claims, 0, |j| {
        named.push(j);
        claims[1].choosing.store(0, Ordering::SeqCst);
    });
    assert_eq!(named, [1]);
    release(&claims, 0);
    // Sharer 2 sits on u64::MAX: sharer 0's ticket saturates to MAX too and wins the tie by index, as does 1.
    claims[2].number.store(u64::MAX, Ordering::SeqCst);
    for me in [0, 1] {
        acquire(&claims, me, |j| panic!("sharer {me} waited for {j}"));
        assert_eq!(snapshot(&claims[me]), (0, u64::MAX));
        release(&claims, me);
    }
    // Sharer 0 sits on u64::MAX: 1 ties with it and loses by index, so it waits for 0 (and is never ahead).
    claims[2].number.store(0, Ordering::SeqCst);
    claims[0].number.store(u64::MAX, Ordering::SeqCst);
    let mut waited = 0;
    acquire(&claims, 1, |j| {
        assert_eq!(j, 0);
        waited += 1;
        claims[0].number.store(0, Ordering::SeqCst);
    });
    assert_eq!(waited, 1);
}

#[test]
fn a_holder_is_faulted_only_when_the_monitor_saw_it_hold_while_running() {
    let bound = 100;
    let mut j = StuckJudge::new();
    let held = (0, 7);
    // The first report only records what the monitor sees.
    assert_eq!(j.observe(held, 1, 1000, bound), Stuck::Wait);
    // Not long enough yet.
    assert_eq!(j.observe(held, 2, 1050, bound), Stuck::Wait);
    // Long enough, but the holder's core did not run (heartbeat unchanged since the first sighting).
    assert_eq!(j.observe(held, 1, 1200, bound), Stuck::Wait);
    assert_eq!(j.observe(held, 3, 1200, bound), Stuck::Faulted { held: 200 });
    // A holder that shows no sign of life is faulted after SILENT_BOUNDS bounds.
    let mut j = StuckJudge::new();
    assert_eq!(j.observe(held, 1, 0, bound), Stuck::Wait);
    assert_eq!(j.observe(held, 1, 499, bound), Stuck::Wait);
    assert_eq!(j.observe(held, 1, 500, bound), Stuck::Faulted { held: 500 });
    // The claim moved: the clock starts again.
    let mut j = StuckJudge::new();
    assert_eq!(j.observe((0, 7), 1, 0, bound), Stuck::Wait);
    assert_eq!(j.observe((0, 8), 2, 150, bound), Stuck::Wait);
    assert_eq!(j.observe((0, 8), 3, 200, bound), Stuck::Wait);
    assert_eq!(j.observe((0, 8), 4, 250, bound), Stuck::Faulted { held: 100 });
    // Released: nothing to judge, and a later hold starts afresh.
    assert_eq!(j.observe((0, 0), 5, 300, bound), Stuck::Wait);
    assert_eq!(j.observe((1, 9), 6, 10_000, bound), Stuck::Wait);
}

/// A ring shared by several readers, driven by a simulated NIC: every frame is seen by every reader exactly
/// once and in order, the NIC never writes a descriptor some reader has not read, and the ring never stalls
/// while readers keep up.
#[test]
fn shared_receive_ring_simulation() {
    let n = 16u32;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for readers in 1..=4usize {
        let mut slots: Vec<Option<u64>> = vec![None; n as usize]; // frame number written, None = empty
        let (mut head, mut tail) = (0u32, n - 1);
        let mut cursors = vec![0u32; readers];
        let mut next_frame = 0u64;
        let mut got: Vec<Vec<u64>> = vec![Vec::new(); readers];
        for _ in 0..20_000 {
            match rand() % (readers as u64 + 1) {
                0 => {
                    // The NIC writes a frame if it owns a descriptor ([head, tail)).
                    if head != tail {
                        assert!(slots[head as usize].is_none(), "NIC overwrote an unread descriptor");
                        slots[head as usize] = Some(next_frame);
                        next_frame += 1;
                        head = (head + 1) % n;
                    }
                }
                r => {
                    let r = r as usize - 1;
                    // Reader r reads until an empty slot or the tail.
                    while cursors[r] != tail {
                        let Some(f) = slots[cursors[r] as usize] else { break };
                        got[r].push(f);
                        cursors[r] = (cursors[r] + 1) % n;
                    }
                    if let Some(t) = reclaim_tail(tail, cursors.iter().copied(), n) {
                        let mut i = tail;
                        while i != t {
                            slots[i as usize] = None;
                            i = (i + 1) % n;
                        }
                        tail = t;
                    }
                }
            }
        }
        for g in &got {
            let expected: Vec<u64> = (0..g.len() as u64).collect();
            assert_eq!(g, &expected, "every reader sees every frame once, in order");
            assert!(g.len() as u64 + u64::from(n) >= next_frame, "a reader fell more than a ring behind");
        }
        assert!(next_frame > 1000, "the ring stalled ({readers} readers, {next_frame} frames)");
    }
}

/// The same ring with reader 0 dying and coming back again and again: while it is dead the others keep the
/// ring moving; after it rejoins it reads strictly increasing, never-seen frames and never one the NIC
/// owns; the NIC never overwrites a descriptor a live reader has not read.
#[test]
fn shared_receive_ring_survives_a_sharer_leaving_and_rejoining() {
    let n = 16u32;
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let readers = 3usize;
    let mut slots: Vec<Option<u64>> = vec![None; n as usize];
    let (mut head, mut tail) = (0u32, n - 1);
    let mut cursors = vec![0u32; readers];
    let mut live = vec![true; readers];
    let mut next_frame = 0u64;
    let mut got: Vec<Vec<u64>> = vec![Vec::new(); readers];
    let mut rejoins = 0;
    for step in 0..40_000u32 {
        if step % 997 == 500 {
            live[0] = !live[0];
            if live[0] {
                let others = (1..readers).filter(|&r| live[r]).map(|r| cursors[r]);
                cursors[0] = rejoin_cursor(tail, others, cursors[0], n);
                rejoins += 1;
            }
        }
        match rand() % (readers as u64 + 1) {
            0 => {
                if head != tail {
                    assert!(slots[head as usize].is_none(), "NIC overwrote a descriptor not given back");
                    slots[head as usize] = Some(next_frame);
                    next_frame += 1;
                    head = (head + 1) % n;
                }
            }
            r => {
                let r = r as usize - 1;
                if !live[r] {
                    continue;
                }
                while cursors[r] != tail {
                    let Some(f) = slots[cursors[r] as usize] else { break };
                    assert!(got[r].last().is_none_or(|&l| f > l), "a reader saw a frame twice or out of order");
                    got[r].push(f);
                    cursors[r] = (cursors[r] + 1) % n;
                }
                let live_cursors = (0..readers).filter(|&r| live[r]).map(|r| cursors[r]);
                if let Some(t) = reclaim_tail(tail, live_cursors, n) {
                    let mut i = tail;
                    while i != t {
                        slots[i as usize] = None;
                        i = (i + 1) % n;
                    }
                    tail = t;
                }
            }
        }
    }
    assert!(rejoins >= 10 && next_frame > 5000, "the ring stalled or the reader never came back ({next_frame} frames)");
    for r in 1..readers {
        let expected: Vec<u64> = (0..got[r].len() as u64).collect();
        assert_eq!(got[r], expected, "a reader that never died must see every frame in order");
    }
}

#[test]
fn eeprom_words_give_the_station_address() {
    // 52:54:00:12:34:56 as an 82540EM EEPROM stores it.
    assert_eq!(mac_from_eeprom([0x5452, 0x1200, 0x5634]), [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
}

#[test]
fn receive_address_encoding() {
    let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    assert_eq!(receive_address(mac), (0x1200_5452, 0x8000_5634));
    assert_eq!(mac_from_u64(mac_to_u64(mac)), mac);
}

#[test]
fn layout_fits_the_region() {
    assert!(layout::END <= layout::REGION);
    assert_eq!(layout::TX_BUFS % 2048, 0x3000 % 2048);
}

#[test]
fn sharers_write_only_the_tail_pages() {
    assert!(sharer_may_write(reg::RDT) && sharer_may_write(reg::TDT));
    for r in [reg::CTRL, reg::EECD, reg::MDIC, reg::ICS, reg::IMS, reg::IMC, reg::RCTL, reg::TCTL, reg::MTA, reg::RAL0, reg::RAH0 + 8, 0x4000] {
        assert!(!sharer_may_write(r), "{} (0x{r:x}) is device-wide", register_name(r));
    }
    assert_eq!(register_name(reg::CTRL), "CTRL");
    assert_eq!(register_name(reg::ICS + 2), "ICS");
    assert_eq!(register_name(reg::RAL0 + 8), "RAL");
    assert_eq!(register_name(reg::RAH0 + 8), "RAH");
    assert_eq!(register_name(0x1F000), "other");
}

/// The fence before a sharer's restart puts every descriptor aimed elsewhere back to its own buffer, touching
/// only the address (a status the NIC wrote stays).
#[test]
fn foreign_descriptors_are_repaired_address_only() {
    let words = vec![0u128; (layout::REGION / 16) as usize];
    // SAFETY: a heap buffer of REGION bytes, 16-byte aligned, alive until the end of the test; nothing else
    // touches it. Regs is never used (no register access in repair_descriptors).
    let mem = unsafe { DescMem::new(words.as_ptr() as u64, 0) };
    for i in 0..layout::RX_DESCS {
        mem.set_rx_desc(i, RxDesc { addr: mem.rx_buffer_addr(i), ..RxDesc::default() });
    }
    for i in 0..layout::TX_DESCS {
        mem.set_tx_desc(i, TxDesc { addr: mem.tx_buffer_addr(i), status: TX_DD, ..TxDesc::default() });
    }
    mem.set_rx_addr(5, 0xDEAD_0000);
    mem.set_rx_desc(9, RxDesc { addr: 0x1000, status: RX_DD | RX_EOP, length: 60, ..RxDesc::default() });
    mem.set_tx_addr(3, 0xBEEF_0000);
    // SAFETY: never read or written by repair_descriptors (the window address is never dereferenced).
    let nic = SharedNic::new(unsafe { Regs::new(0) }, mem, 0, Variant::Fast);
    assert_eq!(nic.repair_descriptors(), (2, 1));
    assert_eq!(nic.mem.rx_desc(5).addr, nic.mem.rx_buffer_addr(5));
    let d9 = nic.mem.rx_desc(9);
    assert_eq!((d9.addr, d9.status, d9.length), (nic.mem.rx_buffer_addr(9), RX_DD | RX_EOP, 60), "status kept");
    assert_eq!(nic.mem.tx_desc(3).addr, nic.mem.tx_buffer_addr(3));
    assert_eq!(nic.repair_descriptors(), (0, 0), "nothing left to repair");
    drop(words);
}

#[test]
fn the_ring_record_names_every_rewritten_register() {
    let programmed = |o: u32| match o {
        reg::RDBAL => 0x0010_1000,
        reg::RDLEN => 128 * 16,
        reg::TDBAL => 0x0010_2000,
        reg::TDLEN => 64 * 16,
        _ => 0,
    };
    let recorded = RingConfig::read(programmed);
    assert!(recorded.differences(&RingConfig::read(programmed)).is_empty());
    let rewritten = RingConfig::read(|o| if o == reg::RDBAL { 0x0010_1400 } else if o == reg::TIDV { 7 } else { programmed(o) });
    assert_eq!(recorded.differences(&rewritten), [(reg::RDBAL, 0x0010_1400, 0x0010_1000), (reg::TIDV, 7, 0)]);
    // A sharer's own check agrees with what the monitor programs.
    let own = layout_ring_registers(0x0010_0000);
    assert!(own.iter().all(|&(o, v)| programmed(o) == v), "{own:x?}");
}

#[test]
fn heads_and_tails_outside_their_rings_are_found() {
    let ok = |o: u32| if o == reg::RDT { 127 } else if o == reg::TDT { 63 } else { 0 };
    assert_eq!(cursor_out_of_range(ok), None);
    assert_eq!(cursor_out_of_range(|o| if o == reg::TDH { 64 } else { ok(o) }), Some((reg::TDH, 64)));
    assert_eq!(cursor_out_of_range(|o| if o == reg::RDT { 128 } else { ok(o) }), Some((reg::RDT, 128)));
}

#[test]
fn a_guarded_tail_page_passes_only_tails_inside_their_rings() {
    assert_eq!(judge_tail_write(reg::RDT, 5, 4), TailWrite::Pass);
    assert_eq!(judge_tail_write(reg::TDT, 63, 4), TailWrite::Pass);
    assert_eq!(judge_tail_write(reg::TDT, 64, 4), TailWrite::Tamper);
    assert_eq!(judge_tail_write(reg::RDT, 128, 4), TailWrite::Tamper);
    assert_eq!(judge_tail_write(reg::RDT, 5, 2), TailWrite::Tamper, "a partial write is not a tail move");
    for o in [reg::RDBAL, reg::RDBAH, reg::RDLEN, reg::RDH, reg::RDTR, reg::TDBAL, reg::TDLEN, reg::TDH, reg::TIDV] {
        assert_eq!(judge_tail_write(o, 0, 4), TailWrite::Tamper, "{}", register_name(o));
    }
}

#[test]
fn receive_resync_marks_the_holes_and_clears_stale_slots() {
    // Tail 10, head 20: the NIC wrote 11..20 — but 15 and 16 went elsewhere (a rewritten base), and it left
    // DD in 30, a slot it still owns.
    let dd = |i: u32| (11..20).contains(&i) && i != 15 && i != 16 || i == 30;
    let r = rx_resync(10, 20, 128, None, dd);
    assert_eq!(r, RxResync { head: None, holes: vec![15, 16], stale: vec![30], moves: vec![] });
    // Around the end of the ring.
    let dd = |i: u32| matches!(i, 126 | 127 | 1);
    assert_eq!(rx_resync(125, 2, 128, None, dd), RxResync { head: None, holes: vec![0], stale: vec![], moves: vec![] });
    // A head outside the ring: the first slot after the tail without DD.
    let dd = |i: u32| (11..14).contains(&i);
    assert_eq!(rx_resync(10, 500, 128, None, dd), RxResync { head: Some(14), holes: vec![], stale: vec![], moves: vec![] });
    // The base had been moved 64 descriptors in: the frames for holes 15 and 16 are in 79 and 80 (the NIC
    // owns those); they move back. A hole whose shifted slot is past the ring stays a hole.
    let dd = |i: u32| (11..20).contains(&i) && i != 15 && i != 16 || i == 79 || i == 80;
    let r = rx_resync(10, 20, 128, Some(64), dd);
    assert_eq!((r.holes, r.moves), (vec![], vec![(79, 15), (80, 16)]));
    let dd = |i: u32| (71..80).contains(&i) && i != 75;
    let r = rx_resync(70, 80, 128, Some(64), dd);
    assert_eq!((r.holes, r.moves), (vec![75], vec![]));
    assert_eq!(base_shift(0x1400, 0x1000), Some(64));
    assert_eq!(base_shift(0x1008, 0x1000), None);
    assert_eq!(base_shift(0x0F00, 0x1000), None);
    // Nothing wrong: nothing to do.
    let dd = |i: u32| (11..20).contains(&i);
    assert_eq!(rx_resync(10, 20, 128, None, dd), RxResync::default());
}

#[test]
fn transmit_slots_the_nic_skipped_are_freed() {
    // Pending [5, 8): those may lack DD. 2 and 40 were passed without completion.
    let dd = |i: u32| !matches!(i, 2 | 40 | 5 | 6 | 7);
    assert_eq!(tx_holes(5, 8, 64, dd), vec![2, 40]);
    // Pending around the end of the ring.
    let dd = |i: u32| !matches!(i, 62 | 63 | 0);
    assert_eq!(tx_holes(62, 1, 64, dd), Vec::<u32>::new());
}

#[test]
fn a_slot_the_monitor_marked_skipped_is_passed() {
    let d = RxDesc { status: RX_DD | RX_EOP, special: SKIPPED_MARK, ..RxDesc::default() };
    assert_eq!(classify_rx(&d), RxSlot::Bad(RxDrop::Skipped));
    // A real frame never carries the mark with a length.
    let d = RxDesc { status: RX_DD | RX_EOP, special: SKIPPED_MARK, length: 60, ..RxDesc::default() };
    assert_eq!(classify_rx(&d), RxSlot::Frame(60));
}

#[test]
fn a_sharer_reports_wrong_registers_at_once_and_a_hole_only_when_it_stays() {
    let mut w = RingWatch::new();
    assert!(w.due(0, 10));
    assert!(!w.due(5, 10));
    assert!(w.due(10, 10));
    // A hole seen once is not reported; seen again at the same cursor, it is.
    assert!(!w.judge(10, false, Some(7), 100));
    assert!(w.judge(20, false, Some(7), 100));
    // Wrong registers: at once, but not within the backoff of the last report.
    assert!(!w.judge(30, true, None, 100));
    assert!(w.judge(120, true, None, 100));
    // A hole that moved on is a new one.
    let mut w = RingWatch::new();
    assert!(!w.judge(0, false, Some(7), 100));
    assert!(!w.judge(10, false, Some(8), 100));
    assert!(!w.judge(20, false, None, 100));
}
