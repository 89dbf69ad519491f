//! Schemas across nodes: the bodies of SCHEMA (the answer to SCHEMA_PULL: every table entry and
//! drop record of the sender) and SCHEMA_PUSH (the entries and drop records a DDL just changed),
//! and the handlers the cluster service calls for them. Merging itself is the catalog's
//! (`shards::catalog::Catalog::merge`); nothing here decides which table wins, and no body is
//! trusted before it is decoded whole.

use shards::catalog::{decode_schema, encode_schema, DropRecord, SchemaChanges, TableEntry};
use shards::node::{Node, NodeError};
use wire::codec::{Reader, Writer};
use wire::schema::SchemaError;

/// Version byte that starts every SCHEMA and SCHEMA_PUSH body (docs/PROTOCOL.md, "Peer protocol").
pub const SCHEMA_BODY_VERSION: u8 = 1;

/// What a SCHEMA or SCHEMA_PUSH body carries (at most `shards::catalog::MAX_TABLES` entries and
/// `MAX_DROP_RECORDS` drop records, checked at decode).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaBody {
    pub entries: Vec<TableEntry>,
    pub drops: Vec<DropRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaSyncError {
    #[error("schema body has version {0}; this node speaks version {SCHEMA_BODY_VERSION}")]
    Version(u8),
    #[error("malformed schema body: {0}")]
    Malformed(#[from] SchemaError),
    /// The body decoded but could not be merged (a peer's invalid table, too many tables) or
    /// the shards could not apply it.
    #[error("adopting a peer's schema: {0}")]
    Adopt(#[from] NodeError),
}

impl SchemaBody {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(SCHEMA_BODY_VERSION);
        encode_schema(&mut w, &self.entries, &self.drops);
        w.into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<SchemaBody, SchemaSyncError> {
        let mut r = Reader::new(body);
        let version = r.u8().map_err(SchemaError::from)?;
        if version != SCHEMA_BODY_VERSION {
            return Err(SchemaSyncError::Version(version));
        }
        let (entries, drops) = decode_schema(&mut r)?;
        r.finish().map_err(SchemaError::from)?;
        Ok(SchemaBody { entries, drops })
    }
}

/// The SCHEMA answer to a SCHEMA_PULL: every table entry and drop record this node's peers see.
pub fn snapshot(node: &Node) -> SchemaBody {
    let (entries, drops) = node.schema_snapshot();
    SchemaBody { entries, drops }
}

/// [`snapshot`], encoded.
pub fn on_schema_pull(node: &Node) -> Vec<u8> {
    snapshot(node).encode()
}

/// A SCHEMA_PUSH request (answered with an empty SCHEMA_OK on success) or the SCHEMA answer of
/// a pull this node made: merges the peer's entries and drop records into the catalog and
/// applies the result to every shard. Returns what changed here.
pub async fn on_schema_push(node: &Node, body: &[u8]) -> Result<SchemaChanges, SchemaSyncError> {
    adopt(node, SchemaBody::decode(body)?).await
}

/// [`on_schema_push`] of a body already decoded (`verbs::PeerRequest::SchemaPush`).
pub async fn adopt(node: &Node, body: SchemaBody) -> Result<SchemaChanges, SchemaSyncError> {
    Ok(node.adopt_schema(&body.entries, &body.drops).await?)
}

/// The SCHEMA_PUSH body announcing a DDL on `table` (by name) that this node just made: the
/// table's live entry, if any, and its drop records.
pub fn push_body(node: &Node, table: &str) -> Vec<u8> {
    let (entries, drops) = node.schema_snapshot();
    SchemaBody {
        entries: entries.into_iter().filter(|e| e.schema.name.eq_ignore_ascii_case(table)).collect(),
        drops: drops.into_iter().filter(|d| d.name.eq_ignore_ascii_case(table)).collect(),
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use proptest::prelude::*;
    use shards::node::NodeConfig;
    use wire::schema::{ColumnDef, TableOptions, TableSchema};
    use wire::ColumnType;

    fn schema(name: String, id: u32, columns: usize) -> TableSchema {
        TableSchema {
            id,
            name,
            partition_key: vec![ColumnDef { name: "k".into(), ty: ColumnType::Text }],
            clustering: vec![],
            columns: (0..columns).map(|i| ColumnDef { name: format!("c{i}"), ty: ColumnType::Blob }).collect(),
            options: TableOptions::default(),
        }
    }

    fn any_body() -> impl Strategy<Value = SchemaBody> {
        let name = "[a-z][a-z0-9_]{0,12}";
        let entry = (name, 1u32.., any::<i64>(), 0usize..4)
            .prop_map(|(n, id, created, columns)| TableEntry { schema: schema(n, id, columns), created });
        let drop = (name, 1u32.., any::<i64>()).prop_map(|(name, id, dropped)| DropRecord { id, name, dropped });
        (prop::collection::vec(entry, 0..6), prop::collection::vec(drop, 0..6))
            .prop_map(|(entries, drops)| SchemaBody { entries, drops })
    }

    proptest! {
        #[test]
        fn bodies_round_trip(body in any_body()) {
            prop_assert_eq!(SchemaBody::decode(&body.encode()).unwrap(), body);
        }

        /// Every cut and every flipped byte is a typed error or another valid body, never a panic.
        #[test]
        fn damaged_bodies_never_panic(body in any_body(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let bytes = body.encode();
            let at = at.index(bytes.len());
            prop_assert!(SchemaBody::decode(&bytes[..at]).is_err());
            let mut flipped = bytes.clone();
            flipped[at] ^= 1 << bit;
            let _ = SchemaBody::decode(&flipped);
        }
    }

    #[test]
    fn unknown_versions_and_trailing_bytes_are_refused() {
        let mut body = SchemaBody::default().encode();
        body[0] = 2;
        assert!(matches!(SchemaBody::decode(&body), Err(SchemaSyncError::Version(2))));
        let mut body = SchemaBody::default().encode();
        body.push(0);
        assert!(matches!(SchemaBody::decode(&body), Err(SchemaSyncError::Malformed(_))));
        assert!(matches!(SchemaBody::decode(&[]), Err(SchemaSyncError::Malformed(_))));
    }

    fn open(dir: &std::path::Path) -> Node {
        let mut config = NodeConfig::new(dir);
        config.shards = 1;
        Node::open(config).expect("open node").0
    }

    /// A pull and a push between two nodes leave both with the same tables, ids and version.
    #[test]
    fn pull_and_push_bring_two_nodes_to_one_schema() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(a_dir.path()), open(b_dir.path()));
        let t = block_on(a.create_table(schema("t".into(), 0, 1), None)).unwrap();
        let changes = block_on(on_schema_push(&b, &on_schema_pull(&a))).unwrap();
        assert_eq!(changes.created, vec![(*t).clone()]);
        assert_eq!(b.table("t").unwrap().id, t.id);
        assert_eq!(a.schema_version(), b.schema_version());

        block_on(b.drop_table("t", None)).unwrap();
        let u = block_on(b.create_table(schema("u".into(), 0, 2), None)).unwrap();
        for table in ["t", "u"] {
            block_on(on_schema_push(&a, &push_body(&b, table))).unwrap();
        }
        assert!(a.table("t").is_err());
        assert_eq!(a.table("u").unwrap().id, u.id);
        assert_eq!(a.schema_version(), b.schema_version());

        let mut bad = schema("bad".into(), 0, 0);
        bad.partition_key.clear();
        let body = SchemaBody { entries: vec![TableEntry { schema: bad, created: 1 }], drops: vec![] }.encode();
        assert!(matches!(block_on(on_schema_push(&a, &body)), Err(SchemaSyncError::Malformed(_))));
        let zero_id =
            SchemaBody { entries: vec![TableEntry { schema: schema("z".into(), 0, 0), created: 1 }], drops: vec![] };
        assert!(matches!(block_on(on_schema_push(&a, &zero_id.encode())), Err(SchemaSyncError::Adopt(_))));
        assert!(a.table("z").is_err());
        block_on(a.shutdown()).unwrap();
        block_on(b.shutdown()).unwrap();
    }
}
