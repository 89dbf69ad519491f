//! Typed peer messages: every request and answer of the peer protocol (HELLO excepted: the
//! transport's own) as one variant, encoded and decoded in one place on top of the body codecs
//! of the modules that own them (`messages`, `merkle`, `gossip`, `schema`), so no caller pairs
//! an opcode with a body or checks an answer's opcode by hand. Wire bytes are those of
//! docs/PROTOCOL.md, "Peer protocol".
//!
//! Serving side: [`PeerHandlers`] routes each request, by opcode, to the [`PeerHandler`]
//! registered for it, after decoding its body; an opcode nobody registered, or a body that
//! does not decode, is answered PEER_ERROR `PROTOCOL`.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;

use shards::mutation::PartitionUpdate;
use shards::scan::ScanPage;
use wire::schema::TableId;

use super::gossip::{Ack, Ack2, Syn};
use super::merkle::{MerkleTree, TreeRequest};
use super::messages::{self, MessageError, ReadRequest, ReadResult, ScanRequest};
use super::opcodes::{self, *};
use super::schema::SchemaBody;
use super::transport::{codes, FrameHandler, PeerError, RemoteError};

/// An encoded MUTATE body. The proxy encodes a write once and sends the same bytes to every
/// replica and stores them as hints (whose on-disk format is these bytes), so the request
/// carries the bytes, not the updates; the replica decodes them with [`MutateBody::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutateBody(Rc<Vec<u8>>);

impl MutateBody {
    pub fn encode(updates: &[PartitionUpdate]) -> MutateBody {
        let mut body = Vec::new();
        messages::encode_mutate(updates, &mut body);
        MutateBody(Rc::new(body))
    }

    /// Bytes [`MutateBody::encode`] (or `messages::encode_mutate`) wrote, e.g. a received
    /// MUTATE body; they are only decoded by whoever applies them.
    pub fn from_encoded(bytes: Rc<Vec<u8>>) -> MutateBody {
        MutateBody(bytes)
    }

    pub fn bytes(&self) -> &Rc<Vec<u8>> {
        &self.0
    }

    pub fn decode(&self) -> Result<Vec<PartitionUpdate>, MessageError> {
        messages::decode_mutate(&self.0)
    }
}

/// A request one node sends another.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerRequest {
    GossipSyn(Syn),
    GossipAck2(Ack2),
    Mutate(MutateBody),
    Read(ReadRequest),
    Scan(ScanRequest),
    MerkleTree(TreeRequest),
    SchemaPull,
    SchemaPush(SchemaBody),
    Truncate(TableId),
}

/// An answer to a [`PeerRequest`]; `Error` is PEER_ERROR, which a call returns as
/// `Err(PeerError::Remote)`.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerAnswer {
    GossipAck(Ack),
    GossipAck2Ok,
    MutateOk,
    ReadResult(ReadResult),
    ScanResult(ScanPage),
    MerkleTree(MerkleTree),
    Schema(SchemaBody),
    SchemaOk,
    TruncateOk,
    Error(RemoteError),
}

/// The answer opcode a request opcode expects (None: not a request).
pub fn answer_to(request: u8) -> Option<u8> {
    Some(match request {
        GOSSIP_SYN => GOSSIP_ACK,
        GOSSIP_ACK2 => GOSSIP_ACK2_OK,
        MUTATE => MUTATE_OK,
        READ => READ_RESULT,
        SCAN => SCAN_RESULT,
        MERKLE_TREE => MERKLE_TREE_RESULT,
        SCHEMA_PULL => SCHEMA,
        SCHEMA_PUSH => SCHEMA_OK,
        TRUNCATE => TRUNCATE_OK,
        _ => return None,
    })
}

impl PeerRequest {
    pub fn opcode(&self) -> u8 {
        match self {
            PeerRequest::GossipSyn(_) => GOSSIP_SYN,
            PeerRequest::GossipAck2(_) => GOSSIP_ACK2,
            PeerRequest::Mutate(_) => MUTATE,
            PeerRequest::Read(_) => READ,
            PeerRequest::Scan(_) => SCAN,
            PeerRequest::MerkleTree(_) => MERKLE_TREE,
            PeerRequest::SchemaPull => SCHEMA_PULL,
            PeerRequest::SchemaPush(_) => SCHEMA_PUSH,
            PeerRequest::Truncate(_) => TRUNCATE,
        }
    }

    pub fn encode(&self) -> (u8, Vec<u8>) {
        let body = match self {
            PeerRequest::GossipSyn(syn) => syn.encode(),
            PeerRequest::GossipAck2(ack2) => ack2.encode(),
            PeerRequest::Mutate(body) => body.bytes().to_vec(),
            PeerRequest::Read(request) => request.encode(),
            PeerRequest::Scan(request) => request.encode(),
            PeerRequest::MerkleTree(request) => request.encode(),
            PeerRequest::SchemaPull => Vec::new(),
            PeerRequest::SchemaPush(schema) => schema.encode(),
            PeerRequest::Truncate(table) => messages::encode_truncate(*table),
        };
        (self.opcode(), body)
    }

    pub fn decode(opcode: u8, body: &[u8]) -> Result<PeerRequest, MessageError> {
        let gossip = |message| move |source| MessageError::Gossip { message, source };
        Ok(match opcode {
            GOSSIP_SYN => PeerRequest::GossipSyn(Syn::decode(body).map_err(gossip("GOSSIP_SYN"))?),
            GOSSIP_ACK2 => PeerRequest::GossipAck2(Ack2::decode(body).map_err(gossip("GOSSIP_ACK2"))?),
            MUTATE => PeerRequest::Mutate(MutateBody::from_encoded(Rc::new(body.to_vec()))),
            READ => PeerRequest::Read(ReadRequest::decode(body)?),
            SCAN => PeerRequest::Scan(ScanRequest::decode(body)?),
            MERKLE_TREE => PeerRequest::MerkleTree(TreeRequest::decode(body)?),
            // Its body is empty; nothing in it is read.
            SCHEMA_PULL => PeerRequest::SchemaPull,
            SCHEMA_PUSH => PeerRequest::SchemaPush(schema_body("SCHEMA_PUSH", body)?),
            TRUNCATE => PeerRequest::Truncate(messages::decode_truncate(body)?),
            other => return Err(MessageError::NotARequest(other)),
        })
    }
}

fn schema_body(message: &'static str, body: &[u8]) -> Result<SchemaBody, MessageError> {
    SchemaBody::decode(body).map_err(|e| MessageError::Schema { message, reason: e.to_string() })
}

impl PeerAnswer {
    pub fn opcode(&self) -> u8 {
        match self {
            PeerAnswer::GossipAck(_) => GOSSIP_ACK,
            PeerAnswer::GossipAck2Ok => GOSSIP_ACK2_OK,
            PeerAnswer::MutateOk => MUTATE_OK,
            PeerAnswer::ReadResult(_) => READ_RESULT,
            PeerAnswer::ScanResult(_) => SCAN_RESULT,
            PeerAnswer::MerkleTree(_) => MERKLE_TREE_RESULT,
            PeerAnswer::Schema(_) => SCHEMA,
            PeerAnswer::SchemaOk => SCHEMA_OK,
            PeerAnswer::TruncateOk => TRUNCATE_OK,
            PeerAnswer::Error(_) => PEER_ERROR,
        }
    }

    pub fn encode(&self) -> (u8, Vec<u8>) {
        let body = match self {
            PeerAnswer::GossipAck(ack) => ack.encode(),
            PeerAnswer::GossipAck2Ok | PeerAnswer::MutateOk | PeerAnswer::SchemaOk | PeerAnswer::TruncateOk => {
                Vec::new()
            }
            PeerAnswer::ReadResult(result) => result.encode(),
            PeerAnswer::ScanResult(page) => messages::encode_scan_result(page),
            PeerAnswer::MerkleTree(tree) => tree.encode(),
            PeerAnswer::Schema(schema) => schema.encode(),
            PeerAnswer::Error(error) => error.encode(),
        };
        (self.opcode(), body)
    }

    /// The empty answers ignore their body, as the callers always have.
    pub fn decode(opcode: u8, body: &[u8]) -> Result<PeerAnswer, MessageError> {
        Ok(match opcode {
            GOSSIP_ACK => PeerAnswer::GossipAck(
                Ack::decode(body).map_err(|source| MessageError::Gossip { message: "GOSSIP_ACK", source })?,
            ),
            GOSSIP_ACK2_OK => PeerAnswer::GossipAck2Ok,
            MUTATE_OK => PeerAnswer::MutateOk,
            READ_RESULT => PeerAnswer::ReadResult(ReadResult::decode(body)?),
            SCAN_RESULT => PeerAnswer::ScanResult(messages::decode_scan_result(body)?),
            MERKLE_TREE_RESULT => PeerAnswer::MerkleTree(MerkleTree::decode(body)?),
            SCHEMA => PeerAnswer::Schema(schema_body("SCHEMA", body)?),
            SCHEMA_OK => PeerAnswer::SchemaOk,
            TRUNCATE_OK => PeerAnswer::TruncateOk,
            PEER_ERROR => PeerAnswer::Error(
                RemoteError::decode(body)
                    .map_err(|source| MessageError::Malformed { message: "PEER_ERROR", source })?,
            ),
            other => return Err(MessageError::NotAnAnswer(other)),
        })
    }

    /// The answer as a call to `peer` with the request `request` (an opcode) returns it:
    /// PEER_ERROR is `Err(Remote)`, an answer of another kind than the request expects is
    /// `Err(UnexpectedAnswer)`.
    pub fn check(self, peer: SocketAddr, request: u8) -> Result<PeerAnswer, PeerError> {
        match self {
            PeerAnswer::Error(e) => Err(PeerError::Remote { peer, code: e.code, message: e.message }),
            answer => {
                expect_kind(peer, request, answer.opcode())?;
                Ok(answer)
            }
        }
    }
}

/// The typed answer to `request` (an opcode) from the raw answer the transport received (a
/// PEER_ERROR was already turned into `Err` there).
pub fn answer_from_frame(
    peer: SocketAddr,
    request: u8,
    (opcode, body): (u8, Vec<u8>),
) -> Result<PeerAnswer, PeerError> {
    expect_kind(peer, request, opcode)?;
    PeerAnswer::decode(opcode, &body).map_err(|error| PeerError::BadAnswer { peer, error })
}

fn expect_kind(peer: SocketAddr, request: u8, answer: u8) -> Result<(), PeerError> {
    match answer_to(request) {
        Some(expected) if expected == answer => Ok(()),
        _ => Err(PeerError::UnexpectedAnswer { peer, request: opcodes::name(request), answer }),
    }
}

/// What serves one kind of request (or several) arriving from peers. `from` is the caller's
/// peer address (from its HELLO). A failure is answered `PeerAnswer::Error`.
pub trait PeerHandler {
    fn handle(&self, from: SocketAddr, request: PeerRequest) -> Pin<Box<dyn Future<Output = PeerAnswer> + '_>>;
}

/// The handler of each request opcode, as the transport's serving side uses it.
#[derive(Default)]
pub struct PeerHandlers {
    table: HashMap<u8, Rc<dyn PeerHandler>>,
}

impl PeerHandlers {
    pub fn new() -> PeerHandlers {
        PeerHandlers::default()
    }

    /// Serves `requests` (request opcodes) with `handler`, replacing any handler they had.
    pub fn register(&mut self, requests: &[u8], handler: Rc<dyn PeerHandler>) -> &mut PeerHandlers {
        for &opcode in requests {
            debug_assert!(answer_to(opcode).is_some(), "{opcode:#04x} is not a request");
            self.table.insert(opcode, handler.clone());
        }
        self
    }
}

impl FrameHandler for PeerHandlers {
    fn handle(&self, from: SocketAddr, opcode: u8, body: Vec<u8>) -> Pin<Box<dyn Future<Output = (u8, Vec<u8>)> + '_>> {
        Box::pin(async move {
            let protocol = |message: String| PeerAnswer::Error(RemoteError::new(codes::PROTOCOL, message)).encode();
            let Some(handler) = self.table.get(&opcode).cloned() else {
                let name = opcodes::name(opcode);
                return protocol(format!("{name} ({opcode:#04x}) is not served on this connection's shard"));
            };
            match PeerRequest::decode(opcode, &body) {
                Ok(request) => handler.handle(from, request).await.encode(),
                Err(e) => protocol(e.to_string()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_opcode_has_an_answer_and_decodes_to_its_variant() {
        let requests = [
            PeerRequest::SchemaPull,
            PeerRequest::Truncate(7),
            PeerRequest::Mutate(MutateBody::encode(&[])),
            PeerRequest::SchemaPush(SchemaBody::default()),
        ];
        for request in requests {
            let (opcode, body) = request.encode();
            assert!(answer_to(opcode).is_some());
            assert_eq!(PeerRequest::decode(opcode, &body).unwrap(), request);
        }
        for answer in [PeerAnswer::MutateOk, PeerAnswer::TruncateOk, PeerAnswer::Schema(SchemaBody::default())] {
            let (opcode, body) = answer.encode();
            assert_eq!(PeerAnswer::decode(opcode, &body).unwrap(), answer);
        }
    }

    #[test]
    fn an_answer_of_the_wrong_kind_is_a_typed_error() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let wrong = answer_from_frame(peer, MUTATE, (READ_RESULT, Vec::new()));
        assert_eq!(wrong, Err(PeerError::UnexpectedAnswer { peer, request: "MUTATE", answer: READ_RESULT }));
        assert_eq!(PeerAnswer::MutateOk.check(peer, MUTATE), Ok(PeerAnswer::MutateOk));
        let remote = PeerAnswer::Error(RemoteError::new(codes::INVALID, "no")).check(peer, MUTATE);
        assert!(matches!(remote, Err(PeerError::Remote { code: codes::INVALID, .. })));
    }
}
