//! Record framing: the 8-byte header, one-record parsing, and the encoders of every record a
//! responder (or, for tests and clients, a web server) writes.

use super::{
    kind, params, Error, ProtocolStatus, HEADER_LEN, KEEP_CONN, MAX_CONTENT_LEN, NULL_REQUEST_ID,
    VERSION_1,
};
use crate::Status;

/// The fixed part of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    pub version: u8,
    /// The record type (see [`kind`]); any byte, unknown ones included.
    pub kind: u8,
    pub request_id: u16,
    pub content_length: u16,
    pub padding_length: u8,
}

impl Header {
    /// The header in the first 8 bytes of `buf`, whatever their values; `None` if shorter.
    pub fn parse(buf: &[u8]) -> Option<Header> {
        let &[version, kind, id_hi, id_lo, len_hi, len_lo, padding_length, _reserved] =
            buf.first_chunk::<HEADER_LEN>()?;
        Some(Header {
            version,
            kind,
            request_id: u16::from_be_bytes([id_hi, id_lo]),
            content_length: u16::from_be_bytes([len_hi, len_lo]),
            padding_length,
        })
    }

    /// The 8 bytes on the wire (the reserved byte is 0).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let [id_hi, id_lo] = self.request_id.to_be_bytes();
        let [len_hi, len_lo] = self.content_length.to_be_bytes();
        [
            self.version,
            self.kind,
            id_hi,
            id_lo,
            len_hi,
            len_lo,
            self.padding_length,
            0,
        ]
    }

    /// Header + content + padding: at most [`super::MAX_RECORD_LEN`].
    pub fn record_len(&self) -> usize {
        HEADER_LEN + usize::from(self.content_length) + usize::from(self.padding_length)
    }
}

/// One whole record: its header and its content (padding dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'b> {
    pub header: Header,
    pub content: &'b [u8],
}

/// Length of the record starting `buf` once its 8 header bytes are in; `None` before. Lets a
/// reader size its buffer: never more than [`super::MAX_RECORD_LEN`] bytes.
pub fn record_len(buf: &[u8]) -> Option<usize> {
    Header::parse(buf).map(|h| h.record_len())
}

/// Parses the record at the start of `buf`.
///
/// `Complete((record, n))`: `buf[..n]` is the whole record, padding included; the next record
/// starts at `buf[n]`. `Partial`: the record is not all there. A version other than 1 is
/// [`Error::BadVersion`] as soon as the first byte is in. Nothing else is judged here: which
/// types and ids are acceptable is the [`super::Responder`]'s business.
pub fn parse_record(buf: &[u8]) -> Result<Status<(Record<'_>, usize)>, Error> {
    match buf.first() {
        None => return Ok(Status::Partial),
        Some(&VERSION_1) => {}
        Some(_) => return Err(Error::BadVersion),
    }
    let Some(header) = Header::parse(buf) else {
        return Ok(Status::Partial);
    };
    let total = header.record_len();
    if buf.len() < total {
        return Ok(Status::Partial);
    }
    let content = &buf[HEADER_LEN..HEADER_LEN + usize::from(header.content_length)];
    Ok(Status::Complete((Record { header, content }, total)))
}

/// The header of a record of `content_len` bytes, without padding (the spec recommends 8-byte
/// alignment but requires receivers to accept any; nginx and httpd do, and unpadded records
/// save a copy or an extra write). Over [`MAX_CONTENT_LEN`] is [`Error::ContentTooLong`].
pub fn record_header(
    kind: u8,
    request_id: u16,
    content_len: usize,
) -> Result<[u8; HEADER_LEN], Error> {
    let content_length = u16::try_from(content_len).map_err(|_| Error::ContentTooLong)?;
    Ok(Header {
        version: VERSION_1,
        kind,
        request_id,
        content_length,
        padding_length: 0,
    }
    .to_bytes())
}

/// Appends one record holding `content`. An empty `content` is the end of a stream.
pub fn encode_record(
    kind: u8,
    request_id: u16,
    content: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let header = record_header(kind, request_id, content.len())?;
    out.reserve(HEADER_LEN + content.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(content);
    Ok(())
}

/// Appends `data` as stream records of `kind`, split at [`MAX_CONTENT_LEN`] bytes. Writes
/// nothing for empty `data`: the end of a stream is an explicit
/// `encode_record(kind, id, b"", out)`, so a chunk that happens to be empty never ends it.
pub fn encode_stream(kind: u8, request_id: u16, data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(MAX_CONTENT_LEN) {
        // A chunk is at most MAX_CONTENT_LEN bytes: the header cannot fail.
        if let Ok(header) = record_header(kind, request_id, chunk.len()) {
            out.extend_from_slice(&header);
            out.extend_from_slice(chunk);
        }
    }
}

/// STDOUT records: the response head and body as the app produces them ([`encode_stream`]).
pub fn encode_stdout(request_id: u16, data: &[u8], out: &mut Vec<u8>) {
    encode_stream(kind::STDOUT, request_id, data, out);
}

/// Appends END_REQUEST: the request is over (or refused, by `status`). `app_status` is the CGI
/// exit status; 0 for a served request.
pub fn encode_end_request(
    request_id: u16,
    app_status: u32,
    status: ProtocolStatus,
    out: &mut Vec<u8>,
) {
    let [a, b, c, d] = app_status.to_be_bytes();
    let body = [a, b, c, d, status as u8, 0, 0, 0];
    // An 8-byte body always fits.
    let _ = encode_record(kind::END_REQUEST, request_id, &body, out);
}

/// Appends the management answer to a record type this application does not know (spec 4.2).
pub fn encode_unknown_type(unknown: u8, out: &mut Vec<u8>) {
    let body = [unknown, 0, 0, 0, 0, 0, 0, 0];
    let _ = encode_record(kind::UNKNOWN_TYPE, NULL_REQUEST_ID, &body, out);
}

/// Appends the GET_VALUES_RESULT answering `query` (the content of a GET_VALUES record): one
/// pair for each queried name found in `known`, in query order; names not in `known` are left
/// out, as the spec says. A malformed query is an error (the caller closes the connection).
pub fn encode_get_values_result(
    query: &[u8],
    known: &[(&[u8], &[u8])],
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let mut content = Vec::new();
    for pair in params::Pairs::new(query) {
        let (name, _empty) = pair?;
        if let Some((_, value)) = known.iter().find(|(k, _)| *k == name) {
            params::encode_pair(name, value, &mut content)?;
        }
    }
    encode_record(kind::GET_VALUES_RESULT, NULL_REQUEST_ID, &content, out)
}

/// Web-server side: appends BEGIN_REQUEST for `role` ([`super::role`]), with `FCGI_KEEP_CONN`
/// when `keep_conn`.
pub fn encode_begin_request(request_id: u16, role: u16, keep_conn: bool, out: &mut Vec<u8>) {
    let [r1, r0] = role.to_be_bytes();
    let flags = if keep_conn { KEEP_CONN } else { 0 };
    let _ = encode_record(
        kind::BEGIN_REQUEST,
        request_id,
        &[r1, r0, flags, 0, 0, 0, 0, 0],
        out,
    );
}

/// Web-server side: appends the whole PARAMS stream for `pairs`, ending with the empty record.
/// The pairs form one byte stream cut at [`MAX_CONTENT_LEN`], so a pair may straddle two
/// records (the spec allows it; a responder must reassemble). On error `out` is left as it was.
pub fn encode_params<'a, I>(request_id: u16, pairs: I, out: &mut Vec<u8>) -> Result<(), Error>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut stream = Vec::new();
    for (name, value) in pairs {
        params::encode_pair(name, value, &mut stream)?;
    }
    encode_stream(kind::PARAMS, request_id, &stream, out);
    encode_record(kind::PARAMS, request_id, b"", out)
}

/// Web-server side: appends a GET_VALUES query for `names`.
pub fn encode_get_values<'a, I>(names: I, out: &mut Vec<u8>) -> Result<(), Error>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut content = Vec::new();
    for name in names {
        params::encode_pair(name, b"", &mut content)?;
    }
    encode_record(kind::GET_VALUES, NULL_REQUEST_ID, &content, out)
}
