//! Typed envelopes and the two wire codecs of `wasimoff.v1`.
//!
//! On the wire an [`Envelope`] carries its payload as a `google.protobuf.Any` whose type URL is
//! `wasimoff/<full message name>`. Here the payload is decoded into [`Payload`], an enum of every
//! message the protocol knows, so the rest of the code never touches type URLs. Unknown payload
//! types survive as [`Payload::Unknown`] so that a peer can answer them with an error instead of
//! dropping the connection.
//!
//! [`Codec::Protobuf`] speaks binary frames (`wasimoff_provider_v1_protobuf`), [`Codec::Json`]
//! speaks proto3-JSON text frames (`wasimoff_provider_v1_json`) with the payload rendered inline
//! as `{..fields, "@type": "wasimoff/..."}`, byte for byte as the TypeScript peers write it.

use bytes::Bytes;
use prost::Message as _;
use serde_json::value::RawValue;

use crate::proto::{self, envelope::MessageType};

/// The prefix of every `Any.type_url` this crate writes.
pub const TYPE_URL_PREFIX: &str = "wasimoff/";

/// One frame on a message transport such as a WebSocket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A binary frame (the protobuf subprotocol).
    Binary(Bytes),
    /// A text frame (the JSON subprotocol).
    Text(String),
}

impl Frame {
    /// The frame's size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Frame::Binary(b) => b.len(),
            Frame::Text(t) => t.len(),
        }
    }

    /// Whether the frame carries no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A payload whose type this crate does not know. The bytes are kept so it can be forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownPayload {
    /// The type URL as received.
    pub type_url: String,
    /// The encoded message (empty when it arrived as JSON).
    pub value: Bytes,
}

impl UnknownPayload {
    /// The message name: the text after the last `/` of the type URL.
    pub fn type_name(&self) -> &str {
        type_name_of(&self.type_url)
    }
}

fn type_name_of(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

macro_rules! payloads {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty) = $name:literal, )*) => {
        /// Every message that can travel as an envelope payload.
        #[derive(Clone, Debug, PartialEq)]
        #[allow(clippy::large_enum_variant)]
        pub enum Payload {
            $( $(#[$doc])* $variant($ty), )*
            /// A payload type this crate does not know.
            Unknown(UnknownPayload),
        }

        impl Payload {
            /// The full protobuf name of the payload's message, e.g. `wasimoff.v1.Ping`.
            pub fn type_name(&self) -> &str {
                match self {
                    $( Payload::$variant(_) => $name, )*
                    Payload::Unknown(u) => u.type_name(),
                }
            }

            /// The full names of all known payload types.
            pub const KNOWN_TYPES: &'static [&'static str] = &[$($name),*];

            fn encode_value(&self) -> Bytes {
                match self {
                    $( Payload::$variant(m) => m.encode_to_vec().into(), )*
                    Payload::Unknown(u) => u.value.clone(),
                }
            }

            /// The length of [`Payload::encode_value`]'s bytes.
            fn value_len(&self) -> usize {
                match self {
                    $( Payload::$variant(m) => m.encoded_len(), )*
                    Payload::Unknown(u) => u.value.len(),
                }
            }

            /// Appends the payload as field `tag` of type `bytes`, as `Any.value` is encoded.
            fn encode_value_field(&self, tag: u32, buf: &mut Vec<u8>) {
                match self {
                    $( Payload::$variant(m) => prost::encoding::message::encode(tag, m, buf), )*
                    Payload::Unknown(u) => prost::encoding::bytes::encode(tag, &u.value, buf),
                }
            }

            /// Decodes `value` as the message named by the type URL (text after the last `/`).
            fn decode_value(type_url: &str, value: Bytes) -> Result<Payload, PayloadError> {
                let name = type_name_of(type_url);
                let refuse = |reason: String| PayloadError { type_name: name.to_owned(), reason };
                let elements = crate::bounds::proto_elements(name, &value).map_err(refuse)?;
                if elements > crate::bounds::MAX_ELEMENTS {
                    return Err(refuse(too_many_elements(elements)));
                }
                Ok(match name {
                    $( $name => Payload::$variant(<$ty>::decode(value).map_err(|e| {
                        PayloadError { type_name: name.to_owned(), reason: e.to_string() }
                    })?), )*
                    _ => Payload::Unknown(UnknownPayload { type_url: type_url.to_owned(), value }),
                })
            }

            fn to_json(&self) -> Result<String, serde_json::Error> {
                match self {
                    $( Payload::$variant(m) => serde_json::to_string(m), )*
                    Payload::Unknown(_) => Ok("{}".to_owned()),
                }
            }

            /// Decodes the JSON text of a payload object straight into its message (its
            /// `@type` key is skipped like any unknown key).
            fn from_json(type_url: &str, fields: &str) -> Result<Payload, PayloadError> {
                let name = type_name_of(type_url);
                Ok(match name {
                    $( $name => Payload::$variant(serde_json::from_str::<$ty>(fields).map_err(|e| {
                        PayloadError { type_name: name.to_owned(), reason: e.to_string() }
                    })?), )*
                    _ => Payload::Unknown(UnknownPayload { type_url: type_url.to_owned(), value: Bytes::new() }),
                })
            }
        }

        $(
            impl From<$ty> for Payload {
                fn from(m: $ty) -> Self {
                    Payload::$variant(m)
                }
            }

            impl TryFrom<Payload> for $ty {
                type Error = Payload;
                fn try_from(p: Payload) -> Result<Self, Payload> {
                    match p {
                        Payload::$variant(m) => Ok(m),
                        other => Err(other),
                    }
                }
            }
        )*
    };
}

payloads! {
    /// A WASI preview 1 task for a provider (broker -> provider, client -> broker).
    Wasip1Request(proto::task::wasip1::Request) = "wasimoff.v1.Task.Wasip1.Request",
    /// The result of a WASI task.
    Wasip1Response(proto::task::wasip1::Response) = "wasimoff.v1.Task.Wasip1.Response",
    /// A Python task.
    PyodideRequest(proto::task::pyodide::Request) = "wasimoff.v1.Task.Pyodide.Request",
    /// The result of a Python task.
    PyodideResponse(proto::task::pyodide::Response) = "wasimoff.v1.Task.Pyodide.Response",
    /// Cancel a running task; the provider echoes it as the response.
    Cancel(proto::task::Cancel) = "wasimoff.v1.Task.Cancel",
    /// Ask for the files a provider holds.
    ListingRequest(proto::filesystem::listing::Request) = "wasimoff.v1.Filesystem.Listing.Request",
    /// The files a provider holds.
    ListingResponse(proto::filesystem::listing::Response) = "wasimoff.v1.Filesystem.Listing.Response",
    /// Ask whether a provider holds a file.
    ProbeRequest(proto::filesystem::probe::Request) = "wasimoff.v1.Filesystem.Probe.Request",
    /// Whether a provider holds a file.
    ProbeResponse(proto::filesystem::probe::Response) = "wasimoff.v1.Filesystem.Probe.Response",
    /// Push a file to a peer.
    UploadRequest(proto::filesystem::upload::Request) = "wasimoff.v1.Filesystem.Upload.Request",
    /// The ref of an uploaded file.
    UploadResponse(proto::filesystem::upload::Response) = "wasimoff.v1.Filesystem.Upload.Response",
    /// Ask a peer for a file.
    DownloadRequest(proto::filesystem::download::Request) = "wasimoff.v1.Filesystem.Download.Request",
    /// A downloaded file or an error.
    DownloadResponse(proto::filesystem::download::Response) = "wasimoff.v1.Filesystem.Download.Response",
    /// A free-form message for humans.
    GenericMessage(proto::event::GenericMessage) = "wasimoff.v1.Event.GenericMessage",
    /// A provider's worker count and busy workers.
    ProviderResources(proto::event::ProviderResources) = "wasimoff.v1.Event.ProviderResources",
    /// The number of providers connected to the broker.
    ClusterInfo(proto::event::ClusterInfo) = "wasimoff.v1.Event.ClusterInfo",
    /// Tasks per second, overall and of the receiving provider.
    Throughput(proto::event::Throughput) = "wasimoff.v1.Event.Throughput",
    /// Files a provider added to or removed from its cache.
    FileSystemUpdate(proto::event::FileSystemUpdate) = "wasimoff.v1.Event.FileSystemUpdate",
    /// Liveness check; answered with an empty Ping.
    Ping(proto::Ping) = "wasimoff.v1.Ping",
}

impl Payload {
    /// Packs the payload into a `google.protobuf.Any` with the `wasimoff/` type URL prefix.
    /// An unknown payload keeps the type URL it arrived with.
    pub fn to_any(&self) -> pbjson_types::Any {
        let type_url = match self {
            Payload::Unknown(u) => u.type_url.clone(),
            known => format!("{TYPE_URL_PREFIX}{}", known.type_name()),
        };
        pbjson_types::Any {
            type_url,
            value: self.encode_value(),
        }
    }

    /// Unpacks a `google.protobuf.Any`, resolving the type by the text after the last `/`.
    pub fn from_any(any: pbjson_types::Any) -> Result<Payload, PayloadError> {
        Payload::decode_value(&any.type_url, any.value)
    }
}

/// A payload that named a known type but did not decode as that type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed {type_name} payload: {reason}")]
pub struct PayloadError {
    /// The message name the payload claimed to be.
    pub type_name: String,
    /// What the decoder said.
    pub reason: String,
}

/// An envelope with its payload decoded.
///
/// Every field is optional as on the wire: `sequence: Some(0)` is a real sequence number (the
/// TypeScript peers start counting at 0), and `None` means the peer did not send one.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Envelope {
    /// Correlates a Response with its Request; numbers Requests and Events.
    pub sequence: Option<u64>,
    /// Request, Response or Event.
    pub kind: Option<MessageType>,
    /// On a Response: the request failed as a whole (there is no payload then).
    pub error: Option<String>,
    /// The message carried.
    pub payload: Option<Payload>,
}

impl Envelope {
    /// A request with the given sequence number.
    pub fn request(sequence: u64, payload: impl Into<Payload>) -> Self {
        Envelope {
            sequence: Some(sequence),
            kind: Some(MessageType::Request),
            error: None,
            payload: Some(payload.into()),
        }
    }

    /// A successful response to the request with this sequence number.
    pub fn response(sequence: u64, payload: impl Into<Payload>) -> Self {
        Envelope {
            sequence: Some(sequence),
            kind: Some(MessageType::Response),
            error: None,
            payload: Some(payload.into()),
        }
    }

    /// A failed response (`error` set, no payload).
    pub fn error_response(sequence: Option<u64>, error: impl Into<String>) -> Self {
        Envelope {
            sequence,
            kind: Some(MessageType::Response),
            error: Some(error.into()),
            payload: None,
        }
    }

    /// An event with the given sequence number.
    pub fn event(sequence: u64, payload: impl Into<Payload>) -> Self {
        Envelope {
            sequence: Some(sequence),
            kind: Some(MessageType::Event),
            error: None,
            payload: Some(payload.into()),
        }
    }

    /// Converts to the generated wire struct.
    pub fn to_proto(&self) -> proto::Envelope {
        proto::Envelope {
            sequence: self.sequence,
            r#type: self.kind.map(|k| k as i32),
            error: self.error.clone(),
            payload: self.payload.as_ref().map(Payload::to_any),
        }
    }

    /// Converts from the generated wire struct, decoding the payload.
    pub fn from_proto(env: proto::Envelope) -> Result<Envelope, DecodeError> {
        let kind = match env.r#type {
            None => None,
            Some(n) => Some(MessageType::try_from(n).map_err(|_| DecodeError::BadType(n))?),
        };
        let payload = match env.payload {
            None => None,
            Some(any) => Some(
                Payload::from_any(any).map_err(|source| DecodeError::Payload {
                    sequence: env.sequence,
                    kind,
                    source,
                })?,
            ),
        };
        Ok(Envelope {
            sequence: env.sequence,
            kind,
            error: env.error,
            payload,
        })
    }

    /// The binary protobuf encoding: the bytes of `self.to_proto().encode_to_vec()`, written
    /// in one pass into one buffer (no `Any` with its own copy of the encoded payload, no
    /// formatted type URL).
    pub fn encode_binary(&self) -> Bytes {
        use prost::encoding::{self, WireType, encode_key, encode_varint, encoded_len_varint};
        // Fields of `Any` are plain proto3 scalars: left out when empty.
        let any = self.payload.as_ref().map(|payload| {
            let (prefix, name) = match payload {
                Payload::Unknown(u) => ("", u.type_url.as_str()),
                known => (TYPE_URL_PREFIX, known.type_name()),
            };
            let url = prefix.len() + name.len();
            let value = payload.value_len();
            let field = |tag, len: usize| {
                if len == 0 {
                    0
                } else {
                    encoding::key_len(tag) + encoded_len_varint(len as u64) + len
                }
            };
            (
                payload,
                prefix,
                name,
                url,
                value,
                field(1, url) + field(2, value),
            )
        });
        let kind = self.kind.map(|k| k as i32);
        let len = self
            .sequence
            .map_or(0, |s| encoding::uint64::encoded_len(1, &s))
            + kind.map_or(0, |k| encoding::int32::encoded_len(2, &k))
            + self
                .error
                .as_ref()
                .map_or(0, |e| encoding::string::encoded_len(3, e))
            + any.map_or(0, |(.., len)| {
                encoding::key_len(4) + encoded_len_varint(len as u64) + len
            });
        let mut buf = Vec::with_capacity(len);
        if let Some(sequence) = self.sequence {
            encoding::uint64::encode(1, &sequence, &mut buf);
        }
        if let Some(kind) = kind {
            encoding::int32::encode(2, &kind, &mut buf);
        }
        if let Some(error) = &self.error {
            encoding::string::encode(3, error, &mut buf);
        }
        if let Some((payload, prefix, name, url, value, len)) = any {
            encode_key(4, WireType::LengthDelimited, &mut buf);
            encode_varint(len as u64, &mut buf);
            if url > 0 {
                encode_key(1, WireType::LengthDelimited, &mut buf);
                encode_varint(url as u64, &mut buf);
                buf.extend_from_slice(prefix.as_bytes());
                buf.extend_from_slice(name.as_bytes());
            }
            if value > 0 {
                payload.encode_value_field(2, &mut buf);
            }
        }
        debug_assert_eq!(buf.len(), len);
        buf.into()
    }

    /// Decodes the binary protobuf encoding.
    pub fn decode_binary(bytes: impl bytes::Buf) -> Result<Envelope, DecodeError> {
        let env =
            proto::Envelope::decode(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        Envelope::from_proto(env)
    }

    /// The proto3-JSON encoding, compact, keys in field order, `@type` last in the payload.
    pub fn encode_json(&self) -> Result<String, EncodeError> {
        let head = proto::Envelope {
            payload: None,
            ..self.to_proto()
        };
        let head = serde_json::to_string(&head).map_err(|e| EncodeError::Json(e.to_string()))?;
        let Some(payload) = &self.payload else {
            return Ok(head);
        };
        let fields = payload
            .to_json()
            .map_err(|e| EncodeError::Json(e.to_string()))?;
        let type_url = serde_json::to_string(&payload.to_any().type_url)
            .map_err(|e| EncodeError::Json(e.to_string()))?;
        // Both strings are serde_json objects, so each ends with '}' and "{}" means empty.
        let payload = splice_field(&fields, &format!("\"@type\":{type_url}"));
        Ok(splice_field(&head, &format!("\"payload\":{payload}")))
    }

    /// Decodes the proto3-JSON encoding. `@type` may stand anywhere in the payload; unknown
    /// keys are skipped, `null` means unset, 64-bit integers may be strings or numbers.
    pub fn decode_json(text: &str) -> Result<Envelope, DecodeError> {
        let elements = crate::bounds::json_elements(text.as_bytes());
        if elements > crate::bounds::MAX_ELEMENTS {
            return Err(DecodeError::Malformed(too_many_elements(elements)));
        }
        // The envelope's few keys, each value kept as its raw text: no tree of the payload and
        // no copy of its strings, which are decoded once, straight into the message.
        let malformed = |e: serde_json::Error| DecodeError::Malformed(e.to_string());
        if !text.trim_start().starts_with('{') {
            return Err(DecodeError::Malformed(
                "an envelope must be a JSON object".into(),
            ));
        }
        let mut members: std::collections::BTreeMap<String, &RawValue> =
            serde_json::from_str(text).map_err(malformed)?;
        let payload = members.remove("payload");
        let mut head = String::from("{");
        for (key, value) in &members {
            if head.len() > 1 {
                head.push(',');
            }
            head.push_str(&serde_json::to_string(key).map_err(malformed)?);
            head.push(':');
            head.push_str(value.get());
        }
        head.push('}');
        let head: proto::Envelope = serde_json::from_str(&head).map_err(malformed)?;
        let kind = match head.r#type {
            None => None,
            Some(n) => Some(MessageType::try_from(n).map_err(|_| DecodeError::BadType(n))?),
        };
        let payload = match payload.map(RawValue::get) {
            None | Some("null") => None,
            Some(fields) if fields.starts_with('{') => {
                let payload_error = |reason: String| DecodeError::Payload {
                    sequence: head.sequence,
                    kind,
                    source: PayloadError {
                        type_name: String::new(),
                        reason,
                    },
                };
                /// Only the type of a payload; its other keys are skipped unread.
                #[derive(serde::Deserialize)]
                struct TypeOf {
                    #[serde(rename = "@type")]
                    type_url: Option<String>,
                }
                let type_url = match serde_json::from_str::<TypeOf>(fields) {
                    Ok(TypeOf {
                        type_url: Some(t), ..
                    }) => t,
                    _ => return Err(payload_error("payload without a \"@type\" string".into())),
                };
                Some(Payload::from_json(&type_url, fields).map_err(|source| {
                    DecodeError::Payload {
                        sequence: head.sequence,
                        kind,
                        source,
                    }
                })?)
            }
            Some(_) => {
                return Err(DecodeError::Malformed(
                    "payload must be a JSON object".into(),
                ));
            }
        };
        Ok(Envelope {
            sequence: head.sequence,
            kind,
            error: head.error,
            payload,
        })
    }
}

fn too_many_elements(elements: usize) -> String {
    format!(
        "{elements} list elements exceed the protocol's limit of {} per message",
        crate::bounds::MAX_ELEMENTS
    )
}

/// Appends `"key":value` text as the last member of a compact JSON object.
fn splice_field(object: &str, member: &str) -> String {
    let body = object.strip_suffix('}').unwrap_or(object);
    let sep = if body.ends_with('{') { "" } else { "," };
    format!("{body}{sep}{member}}}")
}

/// Why an envelope could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is not an envelope at all.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// The `type` field holds a value outside `MessageType`.
    #[error("unknown envelope type {0}")]
    BadType(i32),
    /// The envelope is fine but its payload is not; the sequence and kind allow an answer.
    #[error("{source}")]
    Payload {
        /// The envelope's sequence, if it had one.
        sequence: Option<u64>,
        /// The envelope's kind, if it had one.
        kind: Option<MessageType>,
        /// What was wrong with the payload.
        source: PayloadError,
    },
    /// A text frame on the binary protocol or a binary frame on the JSON protocol.
    #[error("{got} frame on the {codec} subprotocol")]
    WrongFrame {
        /// "text" or "binary".
        got: &'static str,
        /// The negotiated subprotocol.
        codec: &'static str,
    },
    /// The frame is larger than the limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The frame's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Why an envelope could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// JSON serialization failed (e.g. a timestamp out of range).
    #[error("cannot encode envelope as JSON: {0}")]
    Json(String),
}

/// The two subprotocols of `wasimoff.v1`: how envelopes become frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Binary frames of protobuf-encoded envelopes (`wasimoff_provider_v1_protobuf`).
    Protobuf,
    /// Text frames of proto3-JSON envelopes (`wasimoff_provider_v1_json`).
    Json,
}

impl Codec {
    /// Subprotocol names in order of preference (protobuf first), as offered in handshakes.
    pub const SUBPROTOCOLS: [&'static str; 2] =
        ["wasimoff_provider_v1_protobuf", "wasimoff_provider_v1_json"];

    /// The subprotocol name of this codec.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Codec::Protobuf => Self::SUBPROTOCOLS[0],
            Codec::Json => Self::SUBPROTOCOLS[1],
        }
    }

    /// The codec for a subprotocol name.
    pub fn from_subprotocol(name: &str) -> Option<Codec> {
        match name.trim() {
            "wasimoff_provider_v1_protobuf" => Some(Codec::Protobuf),
            "wasimoff_provider_v1_json" => Some(Codec::Json),
            _ => None,
        }
    }

    /// Picks a codec from the subprotocols a peer offered (protobuf preferred), e.g. from the
    /// comma-separated values of `Sec-WebSocket-Protocol` headers.
    ///
    /// ```
    /// use wasimoff_core::envelope::Codec;
    /// let offered = ["wasimoff_provider_v1_json, wasimoff_provider_v1_protobuf"];
    /// assert_eq!(Codec::negotiate(offered), Some(Codec::Protobuf));
    /// assert_eq!(Codec::negotiate(["chat"]), None);
    /// ```
    pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Codec> {
        let offered: Vec<Codec> = offered
            .into_iter()
            .flat_map(|v| v.split(','))
            .filter_map(Codec::from_subprotocol)
            .collect();
        [Codec::Protobuf, Codec::Json]
            .into_iter()
            .find(|c| offered.contains(c))
    }

    /// Encodes an envelope as a frame.
    pub fn encode(self, envelope: &Envelope) -> Result<Frame, EncodeError> {
        Ok(match self {
            Codec::Protobuf => Frame::Binary(envelope.encode_binary()),
            Codec::Json => Frame::Text(envelope.encode_json()?),
        })
    }

    /// Decodes a frame; a frame of the wrong kind is [`DecodeError::WrongFrame`].
    pub fn decode(self, frame: Frame) -> Result<Envelope, DecodeError> {
        match (self, frame) {
            (Codec::Protobuf, Frame::Binary(b)) => Envelope::decode_binary(b),
            (Codec::Json, Frame::Text(t)) => Envelope::decode_json(&t),
            (codec, Frame::Text(_)) => Err(DecodeError::WrongFrame {
                got: "text",
                codec: codec.subprotocol(),
            }),
            (codec, Frame::Binary(_)) => Err(DecodeError::WrongFrame {
                got: "binary",
                codec: codec.subprotocol(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Name;

    #[test]
    fn names_match_the_generated_types() {
        assert_eq!(
            proto::task::wasip1::Request::full_name(),
            "wasimoff.v1.Task.Wasip1.Request"
        );
        assert_eq!(
            proto::task::wasip1::Request::type_url(),
            "wasimoff/wasimoff.v1.Task.Wasip1.Request"
        );
        let ping = Payload::Ping(proto::Ping {});
        assert_eq!(ping.to_any().type_url, proto::Ping::type_url());
        assert_eq!(Payload::KNOWN_TYPES.len(), 19);
    }

    #[test]
    fn any_prefix_is_ignored_on_receive() {
        let any = pbjson_types::Any {
            type_url: "type.googleapis.com/wasimoff.v1.Ping".into(),
            value: Bytes::new(),
        };
        assert_eq!(
            Payload::from_any(any).unwrap(),
            Payload::Ping(proto::Ping {})
        );
    }

    #[test]
    fn binary_encoding_is_that_of_the_wire_struct() {
        let info = proto::task::Metadata {
            id: Some("t-1".into()),
            ..Default::default()
        };
        let request = proto::task::wasip1::Request {
            info: Some(info),
            qos: None,
            params: Some(proto::task::wasip1::Params {
                args: vec!["a.wasm".into(), String::new()],
                stdin: Some(Bytes::from_static(b"in")),
                ..Default::default()
            }),
        };
        let unknown = |type_url: &str, value: &'static [u8]| {
            Payload::Unknown(UnknownPayload {
                type_url: type_url.into(),
                value: Bytes::from_static(value),
            })
        };
        let envelopes = [
            Envelope::request(0, request),
            Envelope::response(7, proto::Ping {}),
            Envelope::event(u64::MAX, proto::event::ClusterInfo { providers: Some(3) }),
            Envelope::error_response(Some(2), "nope"),
            Envelope::error_response(None, ""),
            Envelope::default(),
            Envelope {
                payload: Some(unknown("x.y/Other", b"\x08\x01")),
                ..Envelope::default()
            },
            Envelope {
                sequence: Some(1),
                payload: Some(unknown("", b"")),
                ..Envelope::default()
            },
        ];
        for envelope in envelopes {
            assert_eq!(
                envelope.encode_binary().as_ref(),
                envelope.to_proto().encode_to_vec().as_slice(),
                "{envelope:?}"
            );
        }
    }

    #[test]
    fn unknown_payload_survives_binary_round_trip() {
        let env = proto::Envelope {
            sequence: Some(3),
            r#type: Some(1),
            error: None,
            payload: Some(pbjson_types::Any {
                type_url: "wasimoff/other.v9.Thing".into(),
                value: Bytes::from_static(b"\x08\x01"),
            }),
        };
        let bytes = env.encode_to_vec();
        let decoded = Envelope::decode_binary(bytes.as_slice()).unwrap();
        match &decoded.payload {
            Some(Payload::Unknown(u)) => assert_eq!(u.type_name(), "other.v9.Thing"),
            other => panic!("expected unknown payload, got {other:?}"),
        }
        assert_eq!(decoded.encode_binary().as_ref(), bytes.as_slice());
    }

    #[test]
    fn malformed_payload_keeps_sequence_for_an_answer() {
        let env = proto::Envelope {
            sequence: Some(0),
            r#type: Some(1),
            error: None,
            payload: Some(pbjson_types::Any {
                type_url: "wasimoff/wasimoff.v1.Task.Cancel".into(),
                value: Bytes::from_static(b"\xff\xff\xff"),
            }),
        };
        let err = Envelope::decode_binary(env.encode_to_vec().as_slice()).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::Payload {
                sequence: Some(0),
                kind: Some(MessageType::Request),
                ..
            }
        ));
    }

    #[test]
    fn too_many_list_elements_are_refused_before_decoding() {
        use crate::proto::task;
        let request = |args: usize| {
            Envelope::request(
                3,
                task::wasip1::Request {
                    params: Some(task::wasip1::Params {
                        args: vec![String::new(); args],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
        };
        let limit = crate::bounds::MAX_ELEMENTS;
        for codec in [Codec::Protobuf, Codec::Json] {
            let ok = codec.encode(&request(limit - 16)).unwrap();
            assert!(codec.decode(ok).is_ok(), "{codec:?}");
            let big = codec.encode(&request(limit + 1)).unwrap();
            let err = codec.decode(big).unwrap_err();
            assert!(
                err.to_string().contains("limit of 262144"),
                "{codec:?}: {err}"
            );
        }
        // The binary error keeps the sequence, so the peer can be answered.
        let big = Codec::Protobuf.encode(&request(limit + 1)).unwrap();
        assert!(matches!(
            Codec::Protobuf.decode(big),
            Err(DecodeError::Payload {
                sequence: Some(3),
                ..
            })
        ));
    }

    #[test]
    fn json_payload_needs_type_and_skips_unknown_keys() {
        let no_type = r#"{"sequence":"1","type":"Request","payload":{"id":"x"}}"#;
        assert!(matches!(
            Envelope::decode_json(no_type),
            Err(DecodeError::Payload {
                sequence: Some(1),
                ..
            })
        ));
        // Unknown keys are skipped, as the original peers do.
        let extra = r#"{"sequence":"1","type":"Request","payload":{"@type":"wasimoff/wasimoff.v1.Task.Cancel","id":"t","bogus":{"x":[1]}}}"#;
        let cancel = crate::proto::task::Cancel {
            id: Some("t".into()),
            reason: None,
        };
        assert_eq!(
            Envelope::decode_json(extra).expect("decodes").payload,
            Some(Payload::Cancel(cancel))
        );
        assert!(matches!(
            Envelope::decode_json("[1]"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::decode_json(r#"{"type":"Nope"}"#),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn wrong_frame_kind_is_reported() {
        let err = Codec::Protobuf
            .decode(Frame::Text("{}".into()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "text frame on the wasimoff_provider_v1_protobuf subprotocol"
        );
        assert!(matches!(
            Codec::Json.decode(Frame::Binary(Bytes::new())),
            Err(DecodeError::WrongFrame { got: "binary", .. })
        ));
    }

    #[test]
    fn bad_type_number_is_an_error() {
        let bytes = [0x10, 0x07];
        assert_eq!(
            Envelope::decode_binary(&bytes[..]).unwrap_err(),
            DecodeError::BadType(7)
        );
    }
}
