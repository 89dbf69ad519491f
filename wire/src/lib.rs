//! EnigmaDB's shared vocabulary and the bytes that cross a process boundary: column types and
//! values, table schemas, partition tokens, and the binary codec they are written with.
//!
//! This crate never depends on glommio: the client library, the CLI and the tests use it from
//! any Rust program, and the storage engine (`shards`) builds on the same definitions.

pub mod client;
pub mod codec;
pub mod cql;
pub mod frame;
pub mod protocol;
pub mod ring;
pub mod routing;
pub mod schema;
pub mod tls;
pub mod token;
pub mod value;

pub use client::{Client, ClientError, ClientOptions, Prepared};
pub use codec::{DecodeError, Reader, Writer};
pub use frame::{Frame, FrameDecoder, FrameError, Opcode};
pub use protocol::{Consistency, ErrorCode, ErrorResponse, QueryParams, QueryResult, Request, Response};
pub use schema::{
    ClusteringColumn, ClusteringOrder, ColumnDef, ReadRepair, SchemaError, TableId, TableOptions, TableSchema,
};
pub use token::{token_of, Token};
pub use value::{ColumnType, Value, ValueError};
