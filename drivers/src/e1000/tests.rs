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
fn a_dead_sharer_leaves_and_releases_its_lock() {
    let c = Control::default();
    c.live.store(0b111, Ordering::Relaxed);
    c.lock(1);
    assert!(!c.leave(2), "sharer 2 did not hold the lock");
    assert_eq!(c.live.load(Ordering::Relaxed), 0b011);
    assert!(c.leave(1), "sharer 1 held the lock");
    assert_eq!((c.live.load(Ordering::Relaxed), c.lock.load(Ordering::Relaxed)), (0b001, 0));
    assert!(!c.leave(MAX_SHARERS), "an out-of-range index is ignored");
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
