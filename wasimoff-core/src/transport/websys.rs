//! [`WebSysTransport`]: the browser's `WebSocket` as a [`Transport`] (wasm32 only).
//!
//! Incoming messages are queued by the socket's event handlers; the browser offers no receive
//! backpressure, so the queue is unbounded, but every frame is bounded by `max_frame`.

use std::rc::Rc;

use futures::{StreamExt, channel::mpsc};
use wasm_bindgen::{JsCast, JsValue, closure::Closure};
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use super::{CloseReason, Transport, TransportError, TransportReceiver, TransportSender};
use crate::envelope::{Codec, DecodeError, Envelope, Frame};

enum Item {
    Open,
    Frame(Frame),
    Close(CloseReason),
}

/// Keeps the socket's event handlers alive while either half exists; closes on drop.
struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut(JsValue)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
    _on_error: Closure<dyn FnMut(JsValue)>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self.ws.close();
    }
}

/// Why [`WebSysTransport::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The browser refused to create the socket (bad URL, blocked port).
    #[error("cannot open WebSocket: {0}")]
    Create(String),
    /// The connection closed before it opened.
    #[error("connection failed: {0}")]
    Closed(CloseReason),
    /// The server selected no wasimoff subprotocol.
    #[error("the server selected no wasimoff subprotocol (got {0:?})")]
    NoSubprotocol(String),
}

/// A browser WebSocket speaking one of the wasimoff subprotocols.
pub struct WebSysTransport {
    socket: Rc<Socket>,
    items: mpsc::UnboundedReceiver<Item>,
    codec: Codec,
    max_frame: usize,
}

impl std::fmt::Debug for WebSysTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSysTransport")
            .field("codec", &self.codec)
            .finish()
    }
}

fn js_error(value: &JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}

impl WebSysTransport {
    /// Opens a WebSocket to `url`, offering both subprotocols, and waits until it is open.
    pub async fn connect(url: &str, max_frame: usize) -> Result<Self, ConnectError> {
        let protocols = js_sys::Array::new();
        for name in Codec::SUBPROTOCOLS {
            protocols.push(&JsValue::from_str(name));
        }
        let ws = WebSocket::new_with_str_sequence(url, &protocols)
            .map_err(|e| ConnectError::Create(js_error(&e)))?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let (tx, mut items) = mpsc::unbounded();

        let on_open = {
            let tx = tx.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |_| {
                let _ = tx.unbounded_send(Item::Open);
            })
        };
        let on_message = {
            let tx = tx.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                let data = event.data();
                let frame = if let Some(text) = data.as_string() {
                    Frame::Text(text)
                } else if let Some(buffer) = data.dyn_ref::<js_sys::ArrayBuffer>() {
                    Frame::Binary(js_sys::Uint8Array::new(buffer).to_vec().into())
                } else {
                    return;
                };
                let _ = tx.unbounded_send(Item::Frame(frame));
            })
        };
        let on_close = {
            let tx = tx.clone();
            Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
                let reason = CloseReason::new(event.code(), event.reason());
                let _ = tx.unbounded_send(Item::Close(reason));
            })
        };
        // An error event is always followed by a close event, which carries the details.
        let on_error = Closure::<dyn FnMut(JsValue)>::new(move |_| {});
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        let socket = Rc::new(Socket {
            ws,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
            _on_error: on_error,
        });

        match items.next().await {
            Some(Item::Open) => {}
            Some(Item::Close(reason)) => return Err(ConnectError::Closed(reason)),
            Some(Item::Frame(_)) | None => {
                return Err(ConnectError::Closed(CloseReason::new(
                    1006,
                    "connection failed",
                )));
            }
        }
        let selected = socket.ws.protocol();
        let codec =
            Codec::from_subprotocol(&selected).ok_or(ConnectError::NoSubprotocol(selected))?;
        Ok(WebSysTransport {
            socket,
            items,
            codec,
            max_frame,
        })
    }
}

impl Transport for WebSysTransport {
    type Sender = WebSysSender;
    type Receiver = WebSysReceiver;

    fn codec(&self) -> Codec {
        self.codec
    }

    fn split(self) -> (WebSysSender, WebSysReceiver) {
        (
            WebSysSender {
                socket: self.socket.clone(),
                codec: self.codec,
            },
            WebSysReceiver {
                _socket: self.socket,
                items: self.items,
                codec: self.codec,
                max_frame: self.max_frame,
                done: false,
            },
        )
    }
}

/// The sending half of a [`WebSysTransport`].
pub struct WebSysSender {
    socket: Rc<Socket>,
    codec: Codec,
}

impl std::fmt::Debug for WebSysSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSysSender")
            .field("codec", &self.codec)
            .finish()
    }
}

#[async_trait::async_trait(?Send)]
impl TransportSender for WebSysSender {
    async fn send(&mut self, envelope: Envelope) -> Result<(), TransportError> {
        let ws = &self.socket.ws;
        if ws.ready_state() != WebSocket::OPEN {
            return Err(TransportError::Closed(CloseReason::new(
                1006,
                "socket is not open",
            )));
        }
        let sent = match self.codec.encode(&envelope)? {
            Frame::Binary(b) => ws.send_with_u8_array(&b),
            Frame::Text(t) => ws.send_with_str(&t),
        };
        sent.map_err(|e| TransportError::Io(js_error(&e)))
    }

    async fn close(&mut self, reason: CloseReason) -> Result<(), TransportError> {
        // Browsers only let scripts send 1000 or 3000-4999; other codes go into the text.
        let (code, text) = match reason.code {
            1000 | 3000..=4999 => (reason.code, reason.reason.clone()),
            other => (1000, format!("{other}: {}", reason.reason)),
        };
        let text = CloseReason::new(code, text).reason;
        self.socket
            .ws
            .close_with_code_and_reason(code, &text)
            .map_err(|e| TransportError::Io(js_error(&e)))
    }
}

/// The receiving half of a [`WebSysTransport`].
pub struct WebSysReceiver {
    _socket: Rc<Socket>,
    items: mpsc::UnboundedReceiver<Item>,
    codec: Codec,
    max_frame: usize,
    done: bool,
}

impl std::fmt::Debug for WebSysReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSysReceiver")
            .field("codec", &self.codec)
            .finish()
    }
}

#[async_trait::async_trait(?Send)]
impl TransportReceiver for WebSysReceiver {
    async fn recv(&mut self) -> Option<Result<Envelope, TransportError>> {
        if self.done {
            return None;
        }
        loop {
            let item = self.items.next().await;
            return match item {
                Some(Item::Open) => continue,
                Some(Item::Frame(frame)) if frame.len() > self.max_frame => {
                    let err = DecodeError::TooLarge {
                        size: frame.len(),
                        limit: self.max_frame,
                    };
                    Some(Err(err.into()))
                }
                Some(Item::Frame(frame)) => Some(self.codec.decode(frame).map_err(Into::into)),
                Some(Item::Close(reason)) => {
                    self.done = true;
                    Some(Err(TransportError::Closed(reason)))
                }
                None => {
                    self.done = true;
                    Some(Err(TransportError::Closed(CloseReason::new(
                        1006,
                        "socket dropped",
                    ))))
                }
            };
        }
    }
}
