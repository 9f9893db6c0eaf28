//! The connection rules of a responder that serves one request at a time (spec sections 3.3,
//! 4, 5 and 6.2), as a state machine fed one record at a time. No I/O, no allocation: the
//! caller reads, feeds, and writes what each [`Event`] asks for.

use super::record::{parse_record, Record};
use super::{kind, params::Pairs, role, Error, ProtocolStatus, KEEP_CONN, NULL_REQUEST_ID};
use crate::Status;

/// What one record meant, and what the caller must do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'b> {
    /// A management query (its content, already checked to be well-formed name-value pairs):
    /// answer with [`super::encode_get_values_result`].
    GetValues(&'b [u8]),
    /// A record type this responder does not know: answer [`super::encode_unknown_type`] with it.
    UnknownType(u8),
    /// A request began (role responder). Collect the PARAMS stream that follows.
    Begin { request_id: u16, keep_conn: bool },
    /// A BEGIN_REQUEST that is refused: answer [`super::encode_end_request`] for `request_id`
    /// with `status` (`CantMpxConn` for a second concurrent request, `UnknownRole` for a role
    /// other than responder). The active request, if any, goes on.
    Refuse {
        request_id: u16,
        status: ProtocolStatus,
    },
    /// Part of the PARAMS stream: append it to the params buffer (a pair may straddle records).
    Params(&'b [u8]),
    /// The PARAMS stream ended: parse the buffer with [`super::parse_params`].
    ParamsEnd,
    /// Request body bytes.
    Stdin(&'b [u8]),
    /// The request body ended (the worker may have started answering before this).
    StdinEnd,
    /// The web server aborted the active request: stop it and answer
    /// `END_REQUEST(request_id, .., RequestComplete)`. The request is no longer active.
    Abort { request_id: u16 },
    /// A record the spec says to ignore: one for a request id that is not active.
    Ignored,
}

/// Where the active request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Receiving the PARAMS stream.
    Params,
    /// Receiving the STDIN stream.
    Stdin,
    /// Both input streams ended; the worker is answering.
    Responding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Active {
    id: u16,
    keep_conn: bool,
    phase: Phase,
}

/// One connection's state. Feed it the bytes read so far; it consumes one record per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Responder {
    active: Option<Active>,
    max_params: usize,
    params_len: usize,
}

impl Responder {
    /// The default bound on a PARAMS stream: 1 MiB, as for an SCGI head. nginx sends at most
    /// 65,535 bytes (one record); httpd sends records of up to 16 KiB, as many as needed.
    pub const DEFAULT_MAX_PARAMS: usize = 1 << 20;

    /// A connection with no active request, refusing PARAMS streams over `max_params` bytes.
    pub fn new(max_params: usize) -> Self {
        Responder {
            active: None,
            max_params,
            params_len: 0,
        }
    }

    /// Consumes the record at the start of `buf`.
    ///
    /// `Complete((event, n))`: `buf[..n]` was one record; call again with `buf[n..]`.
    /// `Partial`: the record is not all there; read more and call again with the longer buffer
    /// (the state is unchanged). `Err`: the connection is unusable; close it.
    pub fn feed<'b>(&mut self, buf: &'b [u8]) -> Result<Status<(Event<'b>, usize)>, Error> {
        match parse_record(buf)? {
            Status::Partial => Ok(Status::Partial),
            Status::Complete((record, n)) => Ok(Status::Complete((self.on_record(record)?, n))),
        }
    }

    /// The worker sent END_REQUEST for the active request: it is over, its id inactive, and the
    /// connection ready for the next BEGIN_REQUEST (if the worker keeps it open).
    pub fn end_request(&mut self) {
        self.active = None;
    }

    /// The id of the active request, if one is.
    pub fn active_request(&self) -> Option<u16> {
        self.active.map(|a| a.id)
    }

    /// Whether the active request asked to keep the connection open (`FCGI_KEEP_CONN`).
    pub fn keep_conn(&self) -> bool {
        self.active.is_some_and(|a| a.keep_conn)
    }

    fn on_record<'b>(&mut self, record: Record<'b>) -> Result<Event<'b>, Error> {
        let Record { header, content } = record;
        let id = header.request_id;
        if !(kind::BEGIN_REQUEST..=kind::UNKNOWN_TYPE).contains(&header.kind) {
            return Ok(Event::UnknownType(header.kind));
        }
        if id == NULL_REQUEST_ID {
            // Management records: GET_VALUES is the only one a web server sends (spec 4).
            if header.kind != kind::GET_VALUES {
                return Ok(Event::UnknownType(header.kind));
            }
            if let Some(Err(e)) = Pairs::new(content).find(Result::is_err) {
                return Err(e);
            }
            return Ok(Event::GetValues(content));
        }
        let active = match self.active {
            _ if header.kind == kind::BEGIN_REQUEST => return self.begin(id, content),
            // Spec 3.3: records of an inactive request id are ignored.
            Some(active) if active.id == id => active,
            _ => return Ok(Event::Ignored),
        };
        match (header.kind, active.phase, content.is_empty()) {
            (kind::ABORT_REQUEST, _, _) => {
                self.active = None;
                Ok(Event::Abort { request_id: id })
            }
            (kind::PARAMS, Phase::Params, false) => {
                self.params_len = self.params_len.saturating_add(content.len());
                if self.params_len > self.max_params {
                    return Err(Error::ParamsTooLarge);
                }
                Ok(Event::Params(content))
            }
            (kind::PARAMS, Phase::Params, true) => {
                self.set_phase(Phase::Stdin);
                Ok(Event::ParamsEnd)
            }
            (kind::STDIN, Phase::Stdin, false) => Ok(Event::Stdin(content)),
            (kind::STDIN, Phase::Stdin, true) => {
                self.set_phase(Phase::Responding);
                Ok(Event::StdinEnd)
            }
            // Streams out of order, DATA (filter role only), and the types only an application
            // sends (END_REQUEST, STDOUT, STDERR, GET_VALUES_RESULT, UNKNOWN_TYPE).
            _ => Err(Error::UnexpectedRecord),
        }
    }

    fn begin<'b>(&mut self, id: u16, content: &[u8]) -> Result<Event<'b>, Error> {
        let &[role_hi, role_lo, flags, _, _, _, _, _] = content else {
            return Err(Error::BadBeginRequest);
        };
        let keep_conn = flags & KEEP_CONN != 0;
        match self.active {
            Some(active) if active.id == id => Err(Error::UnexpectedRecord),
            Some(_) => Ok(Event::Refuse {
                request_id: id,
                status: ProtocolStatus::CantMpxConn,
            }),
            None if u16::from_be_bytes([role_hi, role_lo]) != role::RESPONDER => {
                Ok(Event::Refuse {
                    request_id: id,
                    status: ProtocolStatus::UnknownRole,
                })
            }
            None => {
                self.active = Some(Active {
                    id,
                    keep_conn,
                    phase: Phase::Params,
                });
                self.params_len = 0;
                Ok(Event::Begin {
                    request_id: id,
                    keep_conn,
                })
            }
        }
    }

    fn set_phase(&mut self, phase: Phase) {
        if let Some(active) = &mut self.active {
            active.phase = phase;
        }
    }
}

impl Default for Responder {
    fn default() -> Self {
        Responder::new(Responder::DEFAULT_MAX_PARAMS)
    }
}
