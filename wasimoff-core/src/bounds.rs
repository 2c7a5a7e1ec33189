//! What decoding a message may cost, checked before it is decoded.
//!
//! A list element is cheap on the wire and dear in memory: an empty string in a `repeated
//! string` is 2 bytes of protobuf (3 of JSON) but 24 bytes decoded, an empty trace event 2 bytes
//! and about 48 decoded. A peer could make one 16 MB frame cost hundreds of megabytes to decode.
//! These counters walk the encoded message without allocating and count its list elements, so
//! a receiver can refuse a message before decoding it:
//!
//! - [`proto_elements`] knows, per message type, where the lists are (argv, environment,
//!   artifacts, trace events, file lists) and counts exactly;
//! - [`json_elements`] counts an upper bound for any JSON text (every array element and object
//!   member needs a `,`, `[` or `{`).
//!
//! [`MAX_ELEMENTS`] is the protocol's limit per message; the envelope decoders enforce it.
//! Receivers with tighter limits (the broker's `max_args`) check the count themselves.
//!
//! ```
//! use wasimoff_core::bounds;
//! assert_eq!(bounds::json_elements(br#"{"args":["a","b,c",""]}"#), 4);
//! ```

use prost::bytes::Buf;

/// The most list elements one message may carry (all lists together). Decoded, that many empty
/// elements cost at most about 12 MiB; real messages carry far fewer.
pub const MAX_ELEMENTS: usize = 1 << 18;

/// Where a message type keeps its lists: `Count` fields are counted once per occurrence,
/// `Message` fields are walked.
#[derive(Clone, Copy)]
enum Node {
    Count,
    Message(&'static [(u32, Node)]),
}

use Node::{Count, Message};

/// `Task.Metadata.trace` (5) -> `Task.Trace.events` (3).
const METADATA: Node = Message(&[(5, Message(&[(3, Count)]))]);
/// `info` (1) of every task response.
const RESPONSE: &[(u32, Node)] = &[(1, METADATA)];
/// `Task.Wasip1.Request`: info (1), params (3) with args (2), envs (3), artifacts (6).
const WASIP1_REQUEST: &[(u32, Node)] = &[
    (1, METADATA),
    (3, Message(&[(2, Count), (3, Count), (6, Count)])),
];
/// `Task.Pyodide.Request`: info (1), params (3) with packages (1), envs (4), artifacts (7).
const PYODIDE_REQUEST: &[(u32, Node)] = &[
    (1, METADATA),
    (3, Message(&[(1, Count), (4, Count), (7, Count)])),
];
/// `Filesystem.Listing.Response.files` (1).
const LISTING_RESPONSE: &[(u32, Node)] = &[(1, Count)];
/// `Event.FileSystemUpdate`: added (1), removed (2).
const FILE_SYSTEM_UPDATE: &[(u32, Node)] = &[(1, Count), (2, Count)];

fn schema(type_name: &str) -> Option<&'static [(u32, Node)]> {
    Some(match type_name {
        "wasimoff.v1.Task.Wasip1.Request" => WASIP1_REQUEST,
        "wasimoff.v1.Task.Pyodide.Request" => PYODIDE_REQUEST,
        "wasimoff.v1.Task.Wasip1.Response" | "wasimoff.v1.Task.Pyodide.Response" => RESPONSE,
        "wasimoff.v1.Filesystem.Listing.Response" => LISTING_RESPONSE,
        "wasimoff.v1.Event.FileSystemUpdate" => FILE_SYSTEM_UPDATE,
        _ => return None,
    })
}

/// Counts the list elements of a protobuf-encoded message of the named type (full name, e.g.
/// `wasimoff.v1.Task.Wasip1.Request`); types without lists count 0.
///
/// Fails on bytes that are not protobuf, and on groups (deprecated, never sent by any peer),
/// which would let a list hide from the count.
pub fn proto_elements(type_name: &str, bytes: &[u8]) -> Result<usize, String> {
    let Some(fields) = schema(type_name) else {
        return Ok(0);
    };
    let mut count = 0;
    walk(bytes, fields, &mut count)?;
    Ok(count)
}

fn walk(mut buf: &[u8], fields: &[(u32, Node)], count: &mut usize) -> Result<(), String> {
    let varint = |buf: &mut &[u8]| {
        prost::encoding::decode_varint(buf).map_err(|_| "malformed protobuf".to_owned())
    };
    let skip = |buf: &mut &[u8], n: usize| {
        if buf.len() < n {
            return Err("truncated protobuf".to_owned());
        }
        buf.advance(n);
        Ok(())
    };
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let tag = key >> 3;
        match key & 7 {
            0 => drop(varint(&mut buf)?),
            1 => skip(&mut buf, 8)?,
            5 => skip(&mut buf, 4)?,
            2 => {
                let len = usize::try_from(varint(&mut buf)?).unwrap_or(usize::MAX);
                if buf.len() < len {
                    return Err("truncated protobuf".into());
                }
                let (field, rest) = buf.split_at(len);
                match fields.iter().find(|(t, _)| u64::from(*t) == tag) {
                    Some((_, Count)) => *count += 1,
                    Some((_, Message(inner))) => walk(field, inner, count)?,
                    None => {}
                }
                buf = rest;
            }
            other => return Err(format!("unsupported protobuf wire type {other}")),
        }
    }
    Ok(())
}

/// An upper bound of the array elements and object members in a JSON text: the number of
/// `,`, `[` and `{` outside strings. Runs over bytes; does not check the text is JSON.
pub fn json_elements(text: &[u8]) -> usize {
    let (mut count, mut in_string, mut escaped) = (0, false, false);
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b',' | b'[' | b'{' => count += 1,
                _ => {}
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{self, task};
    use prost::Message as _;

    fn wasip1(args: usize, envs: usize, events: usize) -> task::wasip1::Request {
        task::wasip1::Request {
            info: Some(task::Metadata {
                trace: Some(task::Trace {
                    events: vec![task::TraceEvent::default(); events],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            qos: None,
            params: Some(task::wasip1::Params {
                binary: Some(proto::File {
                    r#ref: Some("hello.wasm".into()),
                    ..Default::default()
                }),
                args: vec![String::new(); args],
                envs: vec!["A=b".into(); envs],
                stdin: Some(vec![b','; 1000].into()),
                artifacts: vec!["out".into()],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn counts_every_list_of_a_wasip1_request() {
        let bytes = wasip1(1000, 7, 3).encode_to_vec();
        let n = proto_elements("wasimoff.v1.Task.Wasip1.Request", &bytes).unwrap();
        assert_eq!(n, 1000 + 7 + 3 + 1);
        // Another type with the same bytes has no lists where these are.
        assert_eq!(proto_elements("wasimoff.v1.Task.Cancel", &bytes), Ok(0));
    }

    #[test]
    fn counts_lists_of_responses_and_file_lists() {
        let response = task::wasip1::Response {
            info: Some(task::Metadata {
                trace: Some(task::Trace {
                    events: vec![task::TraceEvent::default(); 5],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            result: None,
            error_output: None,
        };
        let bytes = response.encode_to_vec();
        assert_eq!(
            proto_elements("wasimoff.v1.Task.Wasip1.Response", &bytes),
            Ok(5)
        );
        let listing = proto::filesystem::listing::Response {
            files: vec!["a".into(); 9],
        };
        assert_eq!(
            proto_elements(
                "wasimoff.v1.Filesystem.Listing.Response",
                &listing.encode_to_vec()
            ),
            Ok(9)
        );
    }

    #[test]
    fn refuses_groups_and_truncation() {
        // Field 9 as a start-group (wire type 3).
        assert!(proto_elements("wasimoff.v1.Task.Wasip1.Request", &[0x4b, 0x4c]).is_err());
        let bytes = wasip1(10, 0, 0).encode_to_vec();
        assert!(
            proto_elements("wasimoff.v1.Task.Wasip1.Request", &bytes[..bytes.len() - 3]).is_err()
        );
    }

    #[test]
    fn json_count_is_an_upper_bound_that_ignores_strings() {
        let request = wasip1(1000, 7, 3);
        let text = serde_json::to_vec(&request).unwrap();
        let n = json_elements(&text);
        let lists = 1000 + 7 + 3 + 1;
        assert!(n >= lists, "{n}");
        assert!(n < lists + 32, "{n}");
        assert_eq!(json_elements(br#"["a\",[{", "\\", 1]"#), 3);
    }
}
