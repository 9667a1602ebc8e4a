//! The token store and its cache on the bundled data: the store holds exactly what the
//! tokenizer produces for every example, a second load maps the cached store, anything that
//! changes the content makes a new one, a damaged entry is rebuilt, and a failed build leaves
//! the cache as it was.

mod common;

use std::path::Path;

use mtl_crds::MultiTaskTrainingJobSpec;
use mtl_trainer::assets::ModelAssets;
use mtl_trainer::data::cache::{Origin, tokens_dir};
use mtl_trainer::data::{Loader, TaskData, read_examples};
use mtl_trainer::io::Storage;
use tokenizers::{Tokenizer, TruncationParams, TruncationStrategy};

use common::{job, tiny_model};

fn load(spec: &MultiTaskTrainingJobSpec, cache: &Path) -> mtl_trainer::Result<Vec<TaskData>> {
    let store = Storage::new()?;
    let assets = ModelAssets::fetch(&store, &spec.model.pretrained, cache)?;
    let config = assets.config()?;
    let encoder = assets.encoder(&config, spec.model.max_length as usize)?;
    Loader::new(&store, cache, &encoder, &assets.tokenizer_path())?.load(spec, true)
}

fn origins(tasks: &[TaskData]) -> Vec<(Option<Origin>, Option<Origin>)> {
    tasks.iter().map(|t| t.origin).collect()
}

fn entries(cache: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(tokens_dir(cache))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn stores_hold_what_the_tokenizer_produces_for_every_example() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let spec = job(&model, &tmp.path().join("out"));
    let tasks = load(&spec, &tmp.path().join("cache")).unwrap();
    let mut tok = Tokenizer::from_file(model.join("tokenizer.json")).unwrap();
    tok.with_truncation(Some(TruncationParams {
        max_length: spec.model.max_length as usize,
        strategy: TruncationStrategy::LongestFirst,
        ..Default::default()
    }))
    .unwrap();
    tok.with_padding(None);
    for t in &tasks {
        for (file, store) in [
            (&t.spec.train, t.train.as_ref().unwrap()),
            (
                t.spec.validation.as_ref().unwrap(),
                t.validation.as_ref().unwrap(),
            ),
        ] {
            let examples = read_examples(&t.spec, Path::new(file), file, true).unwrap();
            assert_eq!(store.len(), examples.len(), "{file}");
            // BERT has two token types: segment ids are kept; ids fit 16 bits.
            assert!(store.meta().has_types);
            assert_eq!(store.meta().id_bytes, 2);
            for (i, e) in examples.iter().enumerate() {
                assert_eq!(store.label(i), e.label, "{file} example {i}");
                assert_eq!(store.choices(), e.seqs.len());
                for (j, (a, b)) in e.seqs.iter().enumerate() {
                    let enc = match b {
                        Some(b) => tok.encode((a.as_str(), b.as_str()), true),
                        None => tok.encode(a.as_str(), true),
                    }
                    .unwrap();
                    let seq = store.sequence(i, j);
                    assert_eq!(
                        seq.ids().collect::<Vec<_>>(),
                        enc.get_ids(),
                        "{file} {i}/{j}"
                    );
                    let types: Vec<u32> =
                        seq.types.unwrap().iter().map(|&t| u32::from(t)).collect();
                    assert_eq!(types, enc.get_type_ids(), "{file} {i}/{j}");
                }
            }
        }
    }
}

#[test]
fn the_cache_is_reused_invalidated_by_what_changes_content_and_rebuilt_when_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let cache = tmp.path().join("cache");
    // A private copy of the STS-B training file, to change.
    let stsb = tmp.path().join("stsb.tsv");
    std::fs::copy(
        common::workspace().join("examples/data/stsb/train.tsv"),
        &stsb,
    )
    .unwrap();
    let mut spec = job(&model, &tmp.path().join("out"));
    spec.tasks[0].train = stsb.display().to_string();

    let first = load(&spec, &cache).unwrap();
    let built = Some(Origin::Built);
    let cached = Some(Origin::Cached);
    assert_eq!(origins(&first), vec![(built, built); 3]);
    let keys = entries(&cache);
    assert_eq!(keys.len(), 6, "{keys:?}");
    // A second load (a restart, another job) maps every store.
    assert_eq!(
        origins(&load(&spec, &cache).unwrap()),
        vec![(cached, cached); 3]
    );

    // The data file changes: that store only is rebuilt, under a new key.
    let text = std::fs::read_to_string(&stsb).unwrap();
    let last = text.lines().last().unwrap().to_string();
    std::fs::write(&stsb, format!("{text}{last}\n")).unwrap();
    let o = origins(&load(&spec, &cache).unwrap());
    assert_eq!(o[0], (built, cached));
    assert_eq!(o[1..], [(cached, cached), (cached, cached)]);
    assert_eq!(entries(&cache).len(), 7);

    // maxLength changes what every store holds.
    let mut shorter = spec.clone();
    shorter.model.max_length = 32;
    assert_eq!(
        origins(&load(&shorter, &cache).unwrap()),
        vec![(built, built); 3]
    );
    // A per-task maxLength and an example limit do too, for that task.
    let mut per_task = spec.clone();
    per_task.tasks[1].max_length = Some(24);
    per_task.tasks[2].max_train_examples = Some(50);
    per_task.tasks[2].max_eval_examples = Some(20);
    let tasks = load(&per_task, &cache).unwrap();
    assert_eq!(
        origins(&tasks),
        vec![(cached, cached), (built, built), (built, built)]
    );
    assert_eq!(tasks[2].train_len(), 50);
    assert_eq!(tasks[2].validation.as_ref().unwrap().len(), 20);
    let rte = tasks[1].train.as_ref().unwrap();
    assert!((0..rte.len()).all(|i| rte.sequence(i, 0).len() <= 24));

    // Another tokenizer (here: the same vocabulary, lower-casing turned off).
    let other = tmp.path().join("other-tokenizer");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(model.join(f), other.join(f)).unwrap();
    }
    let tok = std::fs::read_to_string(model.join("tokenizer.json")).unwrap();
    assert!(tok.contains("\"lowercase\":true") || tok.contains("\"lowercase\": true"));
    std::fs::write(
        other.join("tokenizer.json"),
        tok.replace("\"lowercase\":true", "\"lowercase\":false")
            .replace("\"lowercase\": true", "\"lowercase\": false"),
    )
    .unwrap();
    let mut retok = spec.clone();
    retok.model.pretrained = other.display().to_string();
    assert_eq!(
        origins(&load(&retok, &cache).unwrap()),
        vec![(built, built); 3]
    );

    // A damaged entry (a truncated file) is found, removed and rebuilt, never used.
    let before = load(&spec, &cache).unwrap();
    assert_eq!(origins(&before), vec![(cached, cached); 3]);
    let want_first = before[1]
        .train
        .as_ref()
        .unwrap()
        .sequence(0, 0)
        .ids()
        .collect::<Vec<_>>();
    let ids_files: Vec<_> = entries(&cache)
        .into_iter()
        .map(|k| tokens_dir(&cache).join(k).join("ids.bin"))
        .filter(|p| p.exists())
        .collect();
    for p in &ids_files {
        let bytes = std::fs::read(p).unwrap();
        std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
    }
    let rebuilt = load(&spec, &cache).unwrap();
    assert_eq!(origins(&rebuilt), vec![(built, built); 3]);
    let got_first = rebuilt[1]
        .train
        .as_ref()
        .unwrap()
        .sequence(0, 0)
        .ids()
        .collect::<Vec<_>>();
    assert_eq!(got_first, want_first);
    // A flipped byte, the size unchanged, is caught by the checksum.
    let fresh = tmp.path().join("fresh-cache");
    load(&spec, &fresh).unwrap();
    let p = tokens_dir(&fresh)
        .join(entries(&fresh).into_iter().next().unwrap())
        .join("labels.bin");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[3] ^= 0x55;
    std::fs::write(&p, bytes).unwrap();
    let o = origins(&load(&spec, &fresh).unwrap());
    let rebuilt: usize = o
        .iter()
        .map(|(a, b)| usize::from(*a == built) + usize::from(*b == built))
        .sum();
    assert_eq!(rebuilt, 1, "{o:?}");
}

#[test]
fn a_bad_row_fails_the_build_with_its_line_and_leaves_the_cache_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let cache = tmp.path().join("cache");
    let mut spec = job(&model, &tmp.path().join("out"));
    load(&spec, &cache).unwrap();
    let before = entries(&cache);
    // A large file (several chunks of the tokenizer's batches) with a bad label far down.
    let rows: Vec<String> =
        std::fs::read_to_string(common::workspace().join("examples/data/rte/train.tsv"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
    let mut text = vec![rows[0].clone()];
    for i in 0..20_000 {
        text.push(rows[1 + i % (rows.len() - 1)].clone());
    }
    text[15_000] = text[15_000]
        .replace("\tnot_entailment", "\tmaybe")
        .replace("\tentailment", "\tmaybe");
    let big = tmp.path().join("rte-big.tsv");
    std::fs::write(&big, text.join("\n") + "\n").unwrap();
    spec.tasks[1].train = big.display().to_string();
    let err = load(&spec, &cache).err().unwrap().to_string();
    assert!(
        err.contains("rte-big.tsv:15001: label \"maybe\" is not one of"),
        "{err}"
    );
    assert_eq!(
        entries(&cache),
        before,
        "nothing added, nothing left half-built"
    );
    // The entries that were there still load from the cache.
    let mut fine = spec.clone();
    fine.tasks[1].train = job(&model, &tmp.path().join("out")).tasks[1].train.clone();
    assert!(
        origins(&load(&fine, &cache).unwrap())
            .iter()
            .all(|o| *o == (Some(Origin::Cached), Some(Origin::Cached)))
    );
}
