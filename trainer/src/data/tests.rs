use mtl_crds::{DataFormat, TaskSpec, TaskType};

use super::*;

fn task(task_type: TaskType, format: DataFormat) -> TaskSpec {
    TaskSpec {
        name: "t".into(),
        task_type,
        num_labels: None,
        num_choices: (task_type == TaskType::MultipleChoice).then_some(3),
        train: String::new(),
        validation: None,
        test: None,
        submission_file: None,
        format,
        text_fields: vec!["sentence1".into(), "sentence2".into()],
        label_field: Some("label".into()),
        label_names: (task_type == TaskType::Classification)
            .then(|| vec!["entailment".into(), "not_entailment".into()]),
        choices_field: Some("choices".into()),
        positive_label: None,
        max_train_examples: None,
        max_eval_examples: None,
        max_length: None,
        metric: None,
        loss_weight: None,
    }
}

fn read_str(t: &TaskSpec, text: &str) -> crate::Result<Vec<Example>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.txt");
    std::fs::write(&path, text).unwrap();
    read_examples(t, &path, "data.txt", true)
}

const RTE: &str = "index\tsentence1\tsentence2\tlabel\n0\tA \"quoted\" man sleeps.\tA man sleeps.\tentailment\n1\tA cat.\tA dog.\tnot_entailment\n";

#[test]
fn glue_rte_reads_pairs_and_label_names() {
    let ex = read_str(&task(TaskType::Classification, DataFormat::GlueTsv), RTE).unwrap();
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0].seqs[0].0, "A \"quoted\" man sleeps.");
    assert_eq!(ex[0].seqs[0].1.as_deref(), Some("A man sleeps."));
    assert_eq!(ex[0].label, Some(0.0));
    assert_eq!(ex[1].label, Some(1.0));
}

#[test]
fn glue_stsb_reads_float_scores() {
    let mut t = task(TaskType::Regression, DataFormat::GlueTsv);
    t.label_field = Some("score".into());
    let text = "index\tgenre\tsentence1\tsentence2\tscore\n0\tmain\ta\tb\t3.800\n";
    let ex = read_str(&t, text).unwrap();
    assert_eq!(ex[0].label, Some(3.8));
    let err = read_str(&t, &text.replace("3.800", "high"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data.txt:2") && err.contains("\"high\""),
        "{err}"
    );
}

#[test]
fn glue_missing_column_names_it() {
    let mut t = task(TaskType::Classification, DataFormat::GlueTsv);
    t.text_fields = vec!["premise".into()];
    let err = read_str(&t, RTE).unwrap_err().to_string();
    assert!(
        err.contains("data.txt:1") && err.contains("missing column \"premise\""),
        "{err}"
    );
}

#[test]
fn bad_label_names_file_and_line() {
    let t = task(TaskType::Classification, DataFormat::GlueTsv);
    let err = read_str(&t, &RTE.replace("\tnot_entailment", "\tcontradiction"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data.txt:3") && err.contains("contradiction"),
        "{err}"
    );
}

#[test]
fn short_row_is_reported() {
    let t = task(TaskType::Classification, DataFormat::GlueTsv);
    let err = read_str(&t, "index\tsentence1\tsentence2\tlabel\n0\tonly one\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("data.txt:2"), "{err}");
}

#[test]
fn empty_file_is_an_error() {
    let t = task(TaskType::Classification, DataFormat::GlueTsv);
    let err = read_str(&t, "index\tsentence1\tsentence2\tlabel\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no examples"), "{err}");
    let t = task(TaskType::Regression, DataFormat::Jsonl);
    let err = read_str(&t, "\n\n").unwrap_err().to_string();
    assert!(err.contains("no examples"), "{err}");
}

const CSQA: &str = r#"{"answerKey": "B", "id": "x1", "question": {"question_concept": "fish", "choices": [{"label": "A", "text": "desert"}, {"label": "B", "text": "ocean"}, {"label": "C", "text": "sky"}], "stem": "Where do fish live?"}}"#;

#[test]
fn csqa_reads_question_choice_pairs() {
    let t = task(TaskType::MultipleChoice, DataFormat::CommonsenseQaJsonl);
    let ex = read_str(&t, &format!("{CSQA}\n")).unwrap();
    assert_eq!(ex[0].seqs.len(), 3);
    assert_eq!(
        ex[0].seqs[1],
        ("Where do fish live?".into(), Some("ocean".into()))
    );
    assert_eq!(ex[0].label, Some(1.0));
}

#[test]
fn malformed_json_line_names_the_line() {
    let t = task(TaskType::MultipleChoice, DataFormat::CommonsenseQaJsonl);
    let err = read_str(&t, &format!("{CSQA}\n{{\"answerKey\": \n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data.txt:2") && err.contains("malformed JSON"),
        "{err}"
    );
    let err = read_str(&t, &CSQA.replace("\"B\", \"id\"", "\"Z\", \"id\""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data.txt:1") && err.contains("answerKey \"Z\""),
        "{err}"
    );
    let err = read_str(&t, &CSQA.replace("\"stem\"", "\"prompt\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("question.stem"), "{err}");
}

#[test]
fn generic_jsonl_maps_fields_for_every_task_type() {
    let t = task(TaskType::Classification, DataFormat::Jsonl);
    let ex = read_str(
        &t,
        "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": 1}\n",
    )
    .unwrap();
    assert_eq!(ex[0].label, Some(1.0));
    let ex = read_str(
        &t,
        "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": \"not_entailment\"}\n",
    )
    .unwrap();
    assert_eq!(ex[0].label, Some(1.0));
    let err = read_str(
        &t,
        "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": 7}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("out of range"), "{err}");
    let err = read_str(&t, "{\"sentence1\": \"a\", \"label\": 1}\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"sentence2\""), "{err}");

    let mut mc = task(TaskType::MultipleChoice, DataFormat::Jsonl);
    mc.text_fields = vec!["q".into()];
    let ex = read_str(
        &mc,
        "{\"q\": \"pick\", \"choices\": [\"x\", {\"text\": \"y\"}, \"z\"], \"label\": 2}\n",
    )
    .unwrap();
    assert_eq!(ex[0].seqs[1], ("pick".into(), Some("y".into())));
    assert_eq!(ex[0].label, Some(2.0));
    let err = read_str(
        &mc,
        "{\"q\": \"pick\", \"choices\": [\"x\"], \"label\": 0}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("numChoices 3"), "{err}");
}

/// Multiple choice from JSONL with two text fields lays out the segments as transformers'
/// run_swag does: the first field (the context) is segment A, the second (the start of the
/// ending) goes with each choice in segment B.
#[test]
fn generic_jsonl_multiple_choice_puts_the_second_field_with_each_ending() {
    let mut mc = task(TaskType::MultipleChoice, DataFormat::Jsonl);
    mc.text_fields = vec!["sent1".into(), "sent2".into()];
    let ex = read_str(
        &mc,
        "{\"sent1\": \"She opened the door.\", \"sent2\": \"She\", \
         \"choices\": [\"walked in.\", \"flew away.\", \"sang.\"], \"label\": 0}\n",
    )
    .unwrap();
    assert_eq!(
        ex[0].seqs,
        vec![
            (
                "She opened the door.".to_string(),
                Some("She walked in.".to_string())
            ),
            (
                "She opened the door.".to_string(),
                Some("She flew away.".to_string())
            ),
            (
                "She opened the door.".to_string(),
                Some("She sang.".to_string())
            ),
        ]
    );
}
