//! Corrupted and truncated files: our reader names the record, the part and the offset.

use std::time::{Duration, UNIX_EPOCH};

use mtl_tfevents::{Error, EventFile, Part, append_record, read_events, records};

fn file() -> Vec<u8> {
    let mut f = EventFile::with_wall_time("h", 1, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    f.scalar("train/loss", 1, 0.5);
    f.text("hparams", 0, "lr 0.001");
    f.into_bytes()
}

/// (start, data length) of each record.
fn layout(bytes: &[u8]) -> Vec<(u64, u64)> {
    records(bytes)
        .map(|r| r.map(|r| (r.offset, r.data.len() as u64)).unwrap())
        .collect()
}

#[test]
fn every_flipped_bit_is_caught_where_it_is() {
    let good = file();
    let layout = layout(&good);
    assert_eq!(layout.len(), 3);
    for at in 0..good.len() as u64 {
        let (start, len) = *layout.iter().rev().find(|(s, _)| *s <= at).unwrap();
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[at as usize] ^= 1 << bit;
            let err = read_events(&bad).unwrap_err();
            let rel = at - start;
            match err {
                // The length's CRC is checked before the length is used.
                Error::Crc {
                    record,
                    part,
                    offset,
                    stored,
                    computed,
                } => {
                    assert_eq!(record, start, "byte {at}");
                    assert_ne!(stored, computed);
                    if rel < 12 {
                        assert_eq!((part, offset), (Part::Length, start + 8), "byte {at}");
                    } else {
                        assert_eq!((part, offset), (Part::Data, start + 12 + len), "byte {at}");
                    }
                    let msg = err_msg(&bad);
                    assert!(msg.contains(&format!("record at byte {start}")), "{msg}");
                    assert!(
                        msg.contains(&format!("CRC-32C mismatch at byte {offset}")),
                        "{msg}"
                    );
                }
                other => panic!("byte {at} bit {bit}: {other}"),
            }
        }
    }
}

fn err_msg(bytes: &[u8]) -> String {
    read_events(bytes).unwrap_err().to_string()
}

#[test]
fn every_truncation_is_caught_where_it_is() {
    let good = file();
    let layout = layout(&good);
    for cut in 0..good.len() as u64 {
        let short = &good[..cut as usize];
        if let Some(n) = layout.iter().position(|(s, _)| *s == cut) {
            // A cut between records is a shorter valid file.
            assert_eq!(read_events(short).unwrap().len(), n);
            continue;
        }
        let (start, len) = *layout.iter().rev().find(|(s, _)| *s < cut).unwrap();
        let (part, offset, needed) = match cut - start {
            0..8 => (Part::Length, start, 8),
            8..12 => (Part::LengthCrc, start + 8, 4),
            r if r < 12 + len => (Part::Data, start + 12, len),
            _ => (Part::DataCrc, start + 12 + len, 4),
        };
        match read_events(short).unwrap_err() {
            Error::Truncated {
                record,
                part: p,
                offset: o,
                needed: n,
                available,
            } => {
                assert_eq!(
                    (record, p, o, n),
                    (start, part, offset, needed),
                    "cut at {cut}"
                );
                assert_eq!(available, cut - offset, "cut at {cut}");
            }
            other => panic!("cut at {cut}: {other}"),
        }
        let msg = err_msg(short);
        assert!(
            msg.contains(&format!("truncated {part} at byte {offset}")),
            "{msg}"
        );
    }
}

#[test]
fn records_yield_the_good_ones_then_the_error() {
    let mut bytes = file();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let all: Vec<_> = records(&bytes).collect();
    assert_eq!(all.len(), 3);
    assert!(all[..2].iter().all(Result::is_ok));
    assert!(matches!(
        all[2],
        Err(Error::Crc {
            part: Part::Data,
            ..
        })
    ));
}

#[test]
fn a_huge_length_with_a_valid_crc_is_a_truncation() {
    let mut bytes = file();
    let start = bytes.len() as u64;
    let len = u64::MAX.to_le_bytes();
    bytes.extend_from_slice(&len);
    bytes.extend_from_slice(&mtl_tfevents::masked_crc32c(&len).to_le_bytes());
    bytes.extend_from_slice(b"abc");
    match read_events(&bytes).unwrap_err() {
        Error::Truncated {
            record,
            part: Part::Data,
            needed,
            available,
            ..
        } => {
            assert_eq!((record, needed, available), (start, u64::MAX, 3));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn valid_framing_around_a_non_event_is_a_decode_error() {
    let mut bytes = file();
    let start = bytes.len() as u64;
    append_record(&mut bytes, &[0xff, 0xff, 0xff]);
    match read_events(&bytes).unwrap_err() {
        Error::Decode { record, .. } => assert_eq!(record, start),
        other => panic!("{other}"),
    }
    assert!(
        err_msg(&bytes).starts_with(&format!("record at byte {start}: not a tensorflow.Event"))
    );
}
