//! Known-answer test of the masked CRC-32C and the record framing, against TensorBoard's
//! own implementation computed in this run.

mod common;

use mtl_tfevents::{Event, append_record, masked_crc32c};
use prost::Message;
use serde_json::json;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn masked_crc32c_and_framing_match_tensorboard() {
    let pattern: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
    let event = Event::scalar(1_700_000_000.25, "train/loss", 7, 0.5).encode_to_vec();
    let inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"123456789".to_vec(),
        (event.len() as u64).to_le_bytes().to_vec(),
        event,
        pattern,
    ];
    let hexes: Vec<String> = inputs.iter().map(|i| hex(i)).collect();
    let tb = common::tensorboard_check(&["crc"], &json!({ "inputs": hexes }));

    for (i, input) in inputs.iter().enumerate() {
        assert_eq!(
            u64::from(crc32c::crc32c(input)),
            tb["crc32c"][i].as_u64().unwrap(),
            "crc32c of input {i}"
        );
        assert_eq!(
            u64::from(masked_crc32c(input)),
            tb["masked"][i].as_u64().unwrap(),
            "masked crc32c of input {i}"
        );
        let mut record = Vec::new();
        append_record(&mut record, input);
        assert_eq!(
            hex(&record),
            tb["records"][i],
            "record framing of input {i}"
        );
    }
    // The catalogue check value of CRC-32C ("123456789"), not the IEEE CRC-32's 0xcbf43926.
    assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
}
