//! The real TensorBoard (the `tensorboard` Python package) reads what we write: its record
//! reader checks every CRC, its protos parse every event with no unknown fields, and its
//! event accumulators and text plugin see the scalars and texts as written.

mod common;

use std::io::BufWriter;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mtl_tfevents::{EventFile, EventWriter, file_name};
use serde_json::{Value, json};

const HPARAMS: &str = "| name | value |\n|---|---|\n| learning_rate | 0.001 |\n| batch_size | 32 |";

/// What was written, for tensorboard_check.py.
#[derive(Default)]
struct Expected {
    scalars: serde_json::Map<String, Value>,
    texts: serde_json::Map<String, Value>,
}

impl Expected {
    fn scalar(&mut self, tag: &str, step: i64, value: f64) {
        let points = self.scalars.entry(tag).or_insert_with(|| json!([]));
        // TensorBoard stores and returns the f32.
        points
            .as_array_mut()
            .unwrap()
            .push(json!([step, value as f32 as f64]));
    }

    fn text(&mut self, tag: &str, step: i64, markdown: &str) {
        let entries = self.texts.entry(tag).or_insert_with(|| json!([]));
        entries
            .as_array_mut()
            .unwrap()
            .push(json!([step, markdown]));
    }
}

/// The trainer's summaries for one step.
fn step_scalars(step: i64) -> Vec<(&'static str, f64)> {
    let s = step as f64;
    vec![
        ("train/loss", 2.0 / s),
        ("train/loss/sst2", 1.5 / s),
        ("learning_rate", 1e-3 * (1.0 - s / 10.0)),
        ("grad_norm", 0.75 + s),
        ("examples_per_second", 1234.5678 * s),
    ]
}

fn at(secs: u64, ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms)
}

#[test]
fn tensorboard_reads_our_event_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut want = Expected::default();
    let (t1, t2) = (at(1_700_000_000, 500), at(1_700_000_100, 250));

    // A local file through EventWriter: steps 1-3, the hyperparameters.
    let name1 = file_name("trainer-0", 1, t1);
    let file = std::fs::File::create(dir.path().join(&name1)).unwrap();
    let mut w = EventWriter::with_wall_time(BufWriter::new(file), t1).unwrap();
    w.text("hparams", 0, HPARAMS).unwrap();
    want.text("hparams", 0, HPARAMS);
    let mut records1 = 2;
    for step in 1..=3 {
        for (tag, value) in step_scalars(step) {
            w.scalar(tag, step, value).unwrap();
            want.scalar(tag, step, value);
            records1 += 1;
        }
    }
    w.flush().unwrap();

    // A resumed run's whole-object snapshot through EventFile: steps 4-5, evaluation.
    let mut f = EventFile::with_wall_time("trainer-0", 2, t2);
    let mut records2 = 1;
    for step in 4..=5 {
        for (tag, value) in step_scalars(step) {
            f.scalar(tag, step, value);
            want.scalar(tag, step, value);
            records2 += 1;
        }
    }
    for (tag, value) in [("eval/sst2/accuracy", 0.8125), ("eval/mean", 0.8125)] {
        f.scalar(tag, 5, value);
        want.scalar(tag, 5, value);
        records2 += 1;
    }
    let notes = "resumed from **step 3**";
    f.text("notes", 4, notes);
    want.text("notes", 4, notes);
    records2 += 1;
    std::fs::write(dir.path().join(f.name()), f.bytes()).unwrap();

    let input = json!({
        "records": { name1.clone(): records1, f.name(): records2 },
        "wall_time": { name1: 1_700_000_000.5, f.name(): 1_700_000_100.25 },
        "scalars": want.scalars,
        "texts": want.texts,
        "html": {
            "hparams": ["<table>", "<td>learning_rate</td>", "<td>32</td>"],
            "notes": ["<strong>step 3</strong>"],
        },
    });
    let logdir = dir.path().to_str().unwrap();
    let out = common::tensorboard_check(&["logdir", logdir], &input);
    assert_eq!(out["records"], records1 + records2);
}
