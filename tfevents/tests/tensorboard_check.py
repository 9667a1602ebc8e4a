"""TensorBoard's side of mtl-tfevents' tests: reads what the Rust crate wrote.

    python tensorboard_check.py crc          stdin: {"inputs": [hex, ...]}
        prints {"masked": [...], "crc32c": [...], "records": [hex, ...]}: TensorBoard's
        masked CRC-32C, plain CRC-32C and RecordWriter framing of each input.
    python tensorboard_check.py logdir DIR   stdin: the expected contents (see below)
        checks every event file of DIR with TensorBoard's record reader (both CRCs of every
        record), its protos, its EventAccumulator and plugin EventAccumulator, and its text
        plugin's renderer; exits non-zero with a message on the first mismatch.

Expected: {"records": {file name: record count}, "wall_time": {file name: float},
           "scalars": {tag: [[step, value], ...]}, "texts": {tag: [[step, markdown], ...]},
           "html": {tag: [fragment of the text plugin's HTML for the tag's last text, ...]}}
"""

import io
import json
import os
import sys

from google.protobuf import unknown_fields
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.compat import tf
from tensorboard.compat.proto import event_pb2, summary_pb2, types_pb2
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as pywrap
from tensorboard.plugins.text import text_plugin
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util


def fail(msg):
    sys.exit("tensorboard check: " + msg)


def check(cond, msg):
    if not cond:
        fail(msg)


def crc_mode():
    inputs = [bytes.fromhex(h) for h in json.load(sys.stdin)["inputs"]]
    records = []
    for data in inputs:
        buf = io.BytesIO()
        RecordWriter(buf).write(data)
        records.append(buf.getvalue().hex())
    print(json.dumps({
        "masked": [pywrap.masked_crc32c(d) for d in inputs],
        "crc32c": [pywrap.crc32c(d) for d in inputs],
        "records": records,
    }))


def read_records(path):
    """Every record of `path` via TensorBoard's own reader, which raises DataLossError on a
    CRC mismatch or truncation (RawEventFileLoader would swallow it and stop early)."""
    reader = pywrap.PyRecordReader_New(path.encode())
    out = []
    while True:
        try:
            reader.GetNext()
        except tf.errors.OutOfRangeError:
            return out
        out.append(reader.record())


def has_unknown_fields(msg):
    if len(unknown_fields.UnknownFieldSet(msg)):
        return True
    for field, value in msg.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        # protobuf 6+ has is_repeated; older versions only label.
        if hasattr(field, "is_repeated"):
            repeated = field.is_repeated
        else:
            repeated = field.label == field.LABEL_REPEATED
        values = value if repeated else [value]
        if any(has_unknown_fields(v) for v in values):
            return True
    return False


def expect_data_loss(path, data, at, what):
    """The reader must reject `data` with byte `at` flipped: it really checks CRCs."""
    bad = bytearray(data)
    bad[at] ^= 0x01
    bad_path = path + ".corrupt"
    with open(bad_path, "wb") as f:
        f.write(bad)
    try:
        read_records(bad_path)
    except tf.errors.DataLossError as e:
        check(what in str(e), f"{what}: expected '{what}' in {e}")
    else:
        fail(f"TensorBoard's reader accepted a flipped {what} byte at {at}")
    finally:
        os.remove(bad_path)


def logdir_mode(logdir):
    want = json.load(sys.stdin)
    files = sorted(f for f in os.listdir(logdir) if "tfevents" in f)
    check(files == sorted(want["records"]), f"event files {files}, expected {sorted(want['records'])}")
    for name in files:
        path = os.path.join(logdir, name)
        raw = read_records(path)
        check(len(raw) == want["records"][name], f"{name}: {len(raw)} records, expected {want['records'][name]}")
        for i, data in enumerate(raw):
            ev = event_pb2.Event.FromString(data)
            # Our encoding is the canonical one: nothing lost, nothing unknown.
            check(ev.SerializeToString() == data, f"{name} record {i}: re-serializes differently")
            check(not has_unknown_fields(ev), f"{name} record {i}: fields TensorBoard does not know")
            check(ev.wall_time == want["wall_time"][name], f"{name} record {i}: wall_time {ev.wall_time}")
        first = event_pb2.Event.FromString(raw[0])
        check(first.file_version == "brain.Event:2", f"{name}: first event {first}")
        with open(path, "rb") as f:
            data = f.read()
        expect_data_loss(path, data, 0, "header crc32")  # the first length byte
        expect_data_loss(path, data, len(data) - 5, "event crc32")  # the last data byte

    acc = ea.EventAccumulator(logdir, size_guidance={k: 0 for k in ea.DEFAULT_SIZE_GUIDANCE})
    acc.Reload()
    tags = acc.Tags()
    check(sorted(tags[ea.SCALARS]) == sorted(want["scalars"]), f"scalar tags {tags[ea.SCALARS]}")
    for tag, points in want["scalars"].items():
        got = [[e.step, e.value] for e in acc.Scalars(tag)]
        check(got == points, f"scalars {tag}: {got}, expected {points}")
    check(sorted(tags[ea.TENSORS]) == sorted(want["texts"]), f"tensor tags {tags[ea.TENSORS]}")
    check(sorted(acc.PluginTagToContent("text")) == sorted(want["texts"]), "text plugin tags")
    for tag, entries in want["texts"].items():
        got = []
        for e in acc.Tensors(tag):
            t = e.tensor_proto
            check(t.dtype == types_pb2.DT_STRING, f"text {tag}: dtype {t.dtype}")
            check(len(t.tensor_shape.dim) == 0, f"text {tag}: shape {t.tensor_shape}")
            got.append([e.step, t.string_val[0].decode()])
        check(got == entries, f"texts {tag}: {got}, expected {entries}")

    # What TensorBoard's dashboards read: the plugin accumulator migrates simple_value to a
    # scalar-plugin tensor and gives every tag a data class.
    pacc = pea.EventAccumulator(logdir, size_guidance={k: 0 for k in pea.DEFAULT_SIZE_GUIDANCE})
    pacc.Reload()
    check(sorted(pacc.PluginTagToContent("scalars")) == sorted(want["scalars"]), "scalars plugin tags")
    check(sorted(pacc.PluginTagToContent("text")) == sorted(want["texts"]), "text plugin tags (plugin accumulator)")
    for tag, points in want["scalars"].items():
        check(pacc.SummaryMetadata(tag).data_class == summary_pb2.DATA_CLASS_SCALAR, f"{tag}: data class")
        got = [[e.step, float(tensor_util.make_ndarray(e.tensor_proto))] for e in pacc.Tensors(tag)]
        check(got == points, f"scalars plugin {tag}: {got}, expected {points}")
    for tag, entries in want["texts"].items():
        check(pacc.SummaryMetadata(tag).data_class == summary_pb2.DATA_CLASS_TENSOR, f"{tag}: data class")
        # The text dashboard's renderer: a rank-0 string renders as Markdown, not a table
        # of cells; the expected HTML fragments come with the expectation.
        last = pacc.Tensors(tag)[-1]
        html = text_plugin.text_array_to_html(tensor_util.make_ndarray(last.tensor_proto), True)
        for fragment in want["html"].get(tag, []):
            check(fragment in html, f"text {tag}: {fragment!r} not in the rendered {html!r}")
    print(json.dumps({"files": files, "records": sum(want["records"].values())}))


if __name__ == "__main__":
    if sys.argv[1:] == ["crc"]:
        crc_mode()
    elif len(sys.argv) == 3 and sys.argv[1] == "logdir":
        logdir_mode(sys.argv[2])
    else:
        fail(__doc__)
