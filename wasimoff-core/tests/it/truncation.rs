//! The truncation flags of `Task.Wasip1.Output` / `Task.Pyodide.Output` (fields 100 and 101, our
//! extension): absent unless true, so an output that was not cut encodes exactly as the
//! original's; a cut output round-trips in protobuf and JSON, and peers without the fields
//! still read the rest.

use bytes::Bytes;
use prost::Message;
use wasimoff_core::envelope::{Codec, Envelope, Payload};
use wasimoff_core::executor::{ExecOutput, Termination};
use wasimoff_core::proto::task::{self, pyodide, wasip1};

/// `task_wasip1_response_ok_status0` of the golden vectors (`../shared/vectors`).
const GOLDEN_HEX: &str = "0a030a01311a0c0800120668656c6c6f0a1a00";
const GOLDEN_JSON: &str =
    r#"{"info":{"id":"1"},"ok":{"status":0,"stdout":"aGVsbG8K","stderr":""}}"#;

fn output(stdout_truncated: bool, stderr_truncated: bool) -> ExecOutput {
    ExecOutput {
        termination: Termination::Exited(0),
        stdout: Bytes::from_static(b"hello\n"),
        stderr: Bytes::new(),
        stdout_truncated,
        stderr_truncated,
        artifacts: None,
        error: None,
    }
}

fn response(output: ExecOutput) -> wasip1::Response {
    wasip1::Response {
        info: Some(task::Metadata {
            id: Some("1".into()),
            ..Default::default()
        }),
        result: Some(output.into_wasip1_parts().0),
        error_output: None,
    }
}

#[test]
fn an_output_that_was_not_cut_encodes_as_the_original() {
    let response = response(output(false, false));
    assert_eq!(hex::encode(response.encode_to_vec()), GOLDEN_HEX);
    // Byte for byte, not only as parsed values: no `"stdoutTruncated": false`.
    assert_eq!(serde_json::to_string(&response).unwrap(), GOLDEN_JSON);
    let Some(wasip1::response::Result::Ok(ok)) = &response.result else {
        panic!("{response:?}")
    };
    assert_eq!((ok.stdout_truncated, ok.stderr_truncated), (None, None));
}

#[test]
fn a_cut_output_round_trips_in_protobuf_and_json() {
    for (stdout, stderr) in [(true, false), (false, true), (true, true)] {
        let response = response(output(stdout, stderr));
        let Some(wasip1::response::Result::Ok(ok)) = &response.result else {
            panic!("{response:?}")
        };
        assert_eq!(ok.stdout_truncated, stdout.then_some(true));
        assert_eq!(ok.stderr_truncated, stderr.then_some(true));
        assert_eq!(
            (ok.stdout_truncated(), ok.stderr_truncated()),
            (stdout, stderr)
        );

        // Protobuf: the golden bytes of `ok` plus field 100 (key a0 06) / 101 (key a8 06).
        let bytes = response.encode_to_vec();
        let mut extra = String::new();
        if stdout {
            extra.push_str("a00601");
        }
        if stderr {
            extra.push_str("a80601");
        }
        let ok_len = 0x0c + extra.len() / 2;
        assert_eq!(
            hex::encode(&bytes),
            format!("0a030a01311a{ok_len:02x}0800120668656c6c6f0a1a00{extra}")
        );
        assert_eq!(
            wasip1::Response::decode(bytes.as_slice()).unwrap(),
            response
        );

        // JSON: lowerCamelCase names, only the flags that are true.
        let json = serde_json::to_string(&response).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let ok_json = &value["ok"];
        assert_eq!(
            ok_json.get("stdoutTruncated"),
            stdout.then_some(&true.into())
        );
        assert_eq!(
            ok_json.get("stderrTruncated"),
            stderr.then_some(&true.into())
        );
        let back: wasip1::Response = serde_json::from_str(&json).unwrap();
        assert_eq!(back, response);

        // In envelopes, both codecs.
        let envelope = Envelope::response(1, response.clone());
        for codec in [Codec::Protobuf, Codec::Json] {
            let frame = codec.encode(&envelope).unwrap();
            let decoded = codec.decode(frame).unwrap();
            assert_eq!(
                decoded.payload,
                Some(Payload::Wasip1Response(response.clone())),
                "{codec:?}"
            );
        }
    }
}

#[test]
fn proto_field_names_are_accepted_in_json_too() {
    let ok: wasip1::Output =
        serde_json::from_str(r#"{"status":0,"stdout_truncated":true,"stderrTruncated":true}"#)
            .unwrap();
    assert_eq!(ok.stdout_truncated, Some(true));
    assert_eq!(ok.stderr_truncated, Some(true));
}

/// `Task.Wasip1.Output` as the original schema has it (fields 1 to 4).
#[derive(Clone, PartialEq, prost::Message)]
struct OriginalOutput {
    #[prost(int32, optional, tag = "1")]
    status: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "2")]
    stdout: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    stderr: Option<Vec<u8>>,
}

#[test]
fn a_peer_without_the_fields_reads_the_rest() {
    let Some(wasip1::response::Result::Ok(ok)) = response(output(true, true)).result else {
        panic!()
    };
    let old = OriginalOutput::decode(ok.encode_to_vec().as_slice()).unwrap();
    assert_eq!(old.status, Some(0));
    assert_eq!(old.stdout.as_deref(), Some(&b"hello\n"[..]));
    assert_eq!(old.stderr.as_deref(), Some(&b""[..]));
}

#[test]
fn pyodide_outputs_carry_the_same_flags() {
    let ok = pyodide::Output {
        stdout: Some(Bytes::from_static(b"1\n")),
        version: Some("0.27.2".into()),
        stdout_truncated: Some(true),
        ..Default::default()
    };
    let bytes = ok.encode_to_vec();
    assert!(
        hex::encode(&bytes).ends_with("a00601"),
        "{}",
        hex::encode(&bytes)
    );
    assert_eq!(pyodide::Output::decode(bytes.as_slice()).unwrap(), ok);
    let json = serde_json::to_string(&ok).unwrap();
    assert_eq!(
        json,
        r#"{"stdout":"MQo=","version":"0.27.2","stdoutTruncated":true}"#
    );
    assert_eq!(serde_json::from_str::<pyodide::Output>(&json).unwrap(), ok);
}
