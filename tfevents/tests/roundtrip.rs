//! Writing with our writers and reading back with our reader.

use std::io::BufWriter;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mtl_tfevents::{Event, EventFile, EventWriter, FILE_VERSION, file_name, read_events, records};

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

const HPARAMS: &str = "| name | value |\n|---|---|\n| learning_rate | 0.001 |";

fn write_run<W: std::io::Write>(w: &mut EventWriter<W>) {
    for step in 1..=3 {
        w.scalar("train/loss", step, 1.0 / step as f64).unwrap();
        w.scalar("learning_rate", step, 1e-3).unwrap();
    }
    w.text("hparams", 0, HPARAMS).unwrap();
    w.scalar("eval/mean", 3, f64::NAN).unwrap();
}

fn check_run(events: &[Event], wall_time: f64) {
    assert_eq!(events.len(), 9);
    assert_eq!(events[0].file_version(), Some(FILE_VERSION));
    assert!(events.iter().all(|e| e.wall_time == wall_time));
    let scalars: Vec<(&str, i64, f32)> = events.iter().flat_map(Event::scalars).collect();
    assert_eq!(scalars.len(), 7);
    assert_eq!(scalars[0], ("train/loss", 1, 1.0));
    assert_eq!(scalars[1], ("learning_rate", 1, 1e-3));
    assert_eq!(scalars[4], ("train/loss", 3, (1.0f64 / 3.0) as f32));
    assert!(scalars[6].0 == "eval/mean" && scalars[6].2.is_nan());
    let texts: Vec<_> = events.iter().flat_map(Event::texts).collect();
    assert_eq!(texts.len(), 1);
    assert_eq!(
        (texts[0].0, texts[0].1, &*texts[0].2),
        ("hparams", 0, HPARAMS)
    );
}

#[test]
fn writer_round_trip() {
    let mut w = EventWriter::with_wall_time(Vec::new(), at(1_700_000_000_250)).unwrap();
    write_run(&mut w);
    w.flush().unwrap();
    let bytes = w.into_inner();
    check_run(&read_events(&bytes).unwrap(), 1_700_000_000.25);
    // Records start where the previous one ends and are data + 16 bytes.
    let mut next = 0;
    for r in records(&bytes) {
        let r = r.unwrap();
        assert_eq!(r.offset, next);
        next += r.data.len() as u64 + 16;
    }
    assert_eq!(next, bytes.len() as u64);
}

#[test]
fn file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file_name("host", 7, at(1_700_000_000_000)));
    let mut w = EventWriter::new(BufWriter::new(std::fs::File::create(&path).unwrap())).unwrap();
    write_run(&mut w);
    w.flush().unwrap();
    let events = read_events(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(events.len(), 9);
    assert_eq!(events[0].file_version(), Some(FILE_VERSION));
    // The system clock: stamped now, in order.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(events.iter().all(|e| (now - e.wall_time).abs() < 60.0));
    assert!(events.windows(2).all(|p| p[0].wall_time <= p[1].wall_time));
}

#[test]
fn event_file_matches_event_writer() {
    let now = at(1_700_000_000_250);
    let mut w = EventWriter::with_wall_time(Vec::new(), now).unwrap();
    write_run(&mut w);
    let mut f = EventFile::with_wall_time("trainer-0", 1, now);
    for step in 1..=3 {
        f.scalar("train/loss", step, 1.0 / step as f64);
        f.scalar("learning_rate", step, 1e-3);
    }
    f.text("hparams", 0, HPARAMS);
    f.scalar("eval/mean", 3, f64::NAN);
    assert_eq!(f.bytes(), &w.get_ref()[..]);
    check_run(&read_events(&f.into_bytes()).unwrap(), 1_700_000_000.25);

    let live = EventFile::new("trainer-0", 1, now);
    assert_eq!(
        read_events(live.bytes()).unwrap()[0].wall_time,
        1_700_000_000.25
    );
}

#[test]
fn file_names() {
    let a = file_name("trainer-0", 42, at(1_700_000_000_999));
    let b = file_name("trainer-0", 42, at(1_700_000_000_999));
    assert!(
        a.starts_with("events.out.tfevents.1700000000.trainer-0.42."),
        "{a}"
    );
    assert_ne!(a, b, "one process's names are distinct");
    let fields: Vec<&str> = b.split('.').collect();
    assert_eq!(fields.len(), 7, "{b}");
    assert!(fields[6].parse::<u64>().is_ok(), "{b}");
    // One path segment, dots only as separators; before the epoch is 0.
    let odd = file_name("a/b.c d", 1, UNIX_EPOCH - Duration::from_secs(5));
    assert!(
        odd.starts_with("events.out.tfevents.0000000000.a_b_c_d.1."),
        "{odd}"
    );
    assert!(file_name("", 1, at(0)).contains(".localhost.1."));
}
