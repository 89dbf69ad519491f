//! What an SSTable says about itself: [`SstableMeta`], its encoding (the metadata section of the
//! file, and the form a manifest may store), and the statistics the writer accumulates for it.
//! Pure: no I/O. A decoded meta is checked for internal consistency (tokens of its first and
//! last keys, counts) before it is returned.

use wire::codec::{DecodeError, Reader, Writer};
use wire::schema::TableId;
use wire::Token;

use super::format::{verify_crc, Damage, CRC_LEN, MAX_KEY_LEN, SECTION_METADATA};
use crate::cell::{Cell, Deletion, DeletionTime};
use crate::key::PartitionKey;
use crate::row::{PartitionRows, Row};

/// Version of the [`SstableMeta`] encoding (its first byte).
pub const META_ENCODING_VERSION: u8 = 1;

/// Bytes of the encoding with two empty keys (every other field is fixed size).
const META_FIXED_LEN: usize = 139;

/// Smallest metadata section: the fixed fields and the crc32c.
pub const MIN_META_SECTION_LEN: usize = META_FIXED_LEN + CRC_LEN;

/// Bound on the metadata section: two keys of at most [`MAX_KEY_LEN`].
pub const MAX_META_SECTION_LEN: usize = MIN_META_SECTION_LEN + 2 * MAX_KEY_LEN;

/// The description of one SSTable: identity, key range, and statistics for compaction and reads.
///
/// Timestamps are microseconds; `min_timestamp`/`max_timestamp` span every cell, row marker, row
/// deletion and partition deletion (`i64::MAX`/`i64::MIN` when there is none at all).
/// Cell counts include row markers. `max_deletion_time` is Cassandra's max local deletion time:
/// the latest `deleted_at` of a tombstone or deletion and `expires_at` of an expiring cell, and
/// `u32::MAX` as soon as one cell or marker never expires (so `max_deletion_time < gc_before`
/// means that everything in the file is deleted or expired); 0 when the file holds no cell and no
/// deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SstableMeta {
    pub table: TableId,
    pub shard: u16,
    pub generation: u64,
    pub file_size: u64,
    /// Microseconds since the Unix epoch when the writer was created.
    pub created_at: u64,
    pub min_token: Token,
    pub max_token: Token,
    pub first_key: PartitionKey,
    pub last_key: PartitionKey,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub partitions: u64,
    pub rows: u64,
    /// Live and expiring cells (and markers).
    pub live_cells: u64,
    /// Cell tombstones, row deletions and partition deletions.
    pub tombstones: u64,
    pub expiring_cells: u64,
    pub max_deletion_time: DeletionTime,
    pub data_blocks: u64,
    pub index_bytes: u64,
    pub bloom_bytes: u64,
}

impl SstableMeta {
    pub fn encode(&self, w: &mut Writer) {
        w.u8(META_ENCODING_VERSION)
            .u32(self.table)
            .u16(self.shard)
            .u64(self.generation)
            .u64(self.file_size)
            .u64(self.created_at)
            .i64(self.min_token)
            .i64(self.max_token)
            .bytes(self.first_key.bytes())
            .bytes(self.last_key.bytes())
            .i64(self.min_timestamp)
            .i64(self.max_timestamp)
            .u64(self.partitions)
            .u64(self.rows)
            .u64(self.live_cells)
            .u64(self.tombstones)
            .u64(self.expiring_cells)
            .u32(self.max_deletion_time)
            .u64(self.data_blocks)
            .u64(self.index_bytes)
            .u64(self.bloom_bytes);
    }

    /// Decodes what [`SstableMeta::encode`] wrote and checks it is consistent: a known encoding
    /// version, key tokens equal to the min/max tokens, first key <= last key, at least one
    /// partition and one data block.
    pub fn decode(r: &mut Reader<'_>) -> Result<SstableMeta, DecodeError> {
        let version = r.u8()?;
        if version != META_ENCODING_VERSION {
            return Err(r.invalid("sstable meta encoding version", format!("unknown version {version}")));
        }
        let meta = SstableMeta {
            table: r.u32()?,
            shard: r.u16()?,
            generation: r.u64()?,
            file_size: r.u64()?,
            created_at: r.u64()?,
            min_token: r.i64()?,
            max_token: r.i64()?,
            first_key: PartitionKey::from_serialized(r.bytes_limited(MAX_KEY_LEN)?.to_vec()),
            last_key: PartitionKey::from_serialized(r.bytes_limited(MAX_KEY_LEN)?.to_vec()),
            min_timestamp: r.i64()?,
            max_timestamp: r.i64()?,
            partitions: r.u64()?,
            rows: r.u64()?,
            live_cells: r.u64()?,
            tombstones: r.u64()?,
            expiring_cells: r.u64()?,
            max_deletion_time: r.u32()?,
            data_blocks: r.u64()?,
            index_bytes: r.u64()?,
            bloom_bytes: r.u64()?,
        };
        if meta.first_key.token() != meta.min_token || meta.last_key.token() != meta.max_token {
            return Err(r.invalid("sstable meta", "min/max token differ from the first/last key's tokens"));
        }
        if meta.first_key > meta.last_key {
            return Err(r.invalid("sstable meta", "first key sorts after last key"));
        }
        if meta.partitions == 0 || meta.data_blocks == 0 {
            return Err(r.invalid("sstable meta", "no partitions or no data blocks"));
        }
        if meta.expiring_cells > meta.live_cells {
            return Err(r.invalid("sstable meta", "more expiring cells than live cells"));
        }
        Ok(meta)
    }

    /// The metadata section: the encoding and its crc32c.
    pub fn encode_section(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        let mut out = w.into_bytes();
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes the metadata section found at file offset `base`.
    pub fn decode_section(bytes: &[u8], base: u64) -> Result<SstableMeta, Damage> {
        let body = verify_crc(bytes, SECTION_METADATA, base)?;
        let mut r = Reader::new(body);
        let meta = SstableMeta::decode(&mut r).map_err(|e| Damage::decode(SECTION_METADATA, base, e))?;
        r.finish().map_err(|e| Damage::decode(SECTION_METADATA, base, e))?;
        Ok(meta)
    }
}

/// Statistics accumulated over the partitions written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStats {
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub partitions: u64,
    pub rows: u64,
    pub live_cells: u64,
    pub tombstones: u64,
    pub expiring_cells: u64,
    pub max_deletion_time: DeletionTime,
}

impl Default for PartitionStats {
    fn default() -> Self {
        PartitionStats {
            min_timestamp: i64::MAX,
            max_timestamp: i64::MIN,
            partitions: 0,
            rows: 0,
            live_cells: 0,
            tombstones: 0,
            expiring_cells: 0,
            max_deletion_time: 0,
        }
    }
}

impl PartitionStats {
    fn timestamp(&mut self, ts: i64) {
        self.min_timestamp = self.min_timestamp.min(ts);
        self.max_timestamp = self.max_timestamp.max(ts);
    }

    fn deletion_time(&mut self, t: DeletionTime) {
        self.max_deletion_time = self.max_deletion_time.max(t);
    }

    fn cell(&mut self, cell: &Cell) {
        self.timestamp(cell.ts());
        match cell {
            Cell::Live { .. } => {
                self.live_cells += 1;
                self.deletion_time(DeletionTime::MAX);
            }
            Cell::Expiring { expires_at, .. } => {
                self.live_cells += 1;
                self.expiring_cells += 1;
                self.deletion_time(*expires_at);
            }
            Cell::Tombstone { deleted_at, .. } => {
                self.tombstones += 1;
                self.deletion_time(*deleted_at);
            }
        }
    }

    pub fn add(&mut self, partition: &impl PartitionRows) {
        self.add_partition(partition.deletion());
        for (_, row) in partition.rows() {
            self.add_row(row);
        }
    }

    /// A partition's header: counted, with its deletion (its rows go through `add_row`).
    pub fn add_partition(&mut self, deletion: Option<Deletion>) {
        self.partitions += 1;
        if let Some(d) = deletion {
            self.tombstones += 1;
            self.timestamp(d.ts);
            self.deletion_time(d.deleted_at);
        }
    }

    pub fn add_row(&mut self, row: &Row) {
        self.rows += 1;
        if let Some(marker) = &row.marker {
            self.cell(marker);
        }
        if let Some(d) = row.deletion {
            self.tombstones += 1;
            self.timestamp(d.ts);
            self.deletion_time(d.deleted_at);
        }
        row.cells.iter().for_each(|(_, c)| self.cell(c));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cell::Deletion;
    use crate::key::ClusteringKey;
    use crate::row::Partition;
    use crate::row::Row;
    use proptest::prelude::*;

    pub fn any_meta() -> impl Strategy<Value = SstableMeta> {
        let keys = (proptest::collection::vec(any::<u8>(), 1..20), proptest::collection::vec(any::<u8>(), 1..20))
            .prop_map(|(a, b)| {
                let (a, b) = (PartitionKey::from_serialized(a), PartitionKey::from_serialized(b));
                if a <= b {
                    (a, b)
                } else {
                    (b, a)
                }
            });
        let counts = (1u64..1 << 40, any::<u64>(), any::<u64>(), any::<u64>(), 1u64..1 << 30);
        (keys, any::<(u32, u16, u64, u64, u64, i64, i64, u32)>(), counts, any::<(u64, u64)>()).prop_map(
            |((first, last), (table, shard, generation, file_size, created_at, ts_a, ts_b, del), c, (ib, bb))| {
                let live = c.1;
                SstableMeta {
                    table,
                    shard,
                    generation,
                    file_size,
                    created_at,
                    min_token: first.token(),
                    max_token: last.token(),
                    first_key: first,
                    last_key: last,
                    min_timestamp: ts_a.min(ts_b),
                    max_timestamp: ts_a.max(ts_b),
                    partitions: c.0,
                    rows: c.2,
                    live_cells: live,
                    tombstones: c.3,
                    expiring_cells: live / 2,
                    max_deletion_time: del,
                    data_blocks: c.4,
                    index_bytes: ib,
                    bloom_bytes: bb,
                }
            },
        )
    }

    proptest! {
        #[test]
        fn meta_section_round_trips(meta in any_meta()) {
            let bytes = meta.encode_section();
            prop_assert!(bytes.len() >= MIN_META_SECTION_LEN);
            prop_assert_eq!(SstableMeta::decode_section(&bytes, 0), Ok(meta));
        }

        #[test]
        fn meta_decoder_survives_arbitrary_and_mutated_bytes(meta in any_meta(), junk in proptest::collection::vec(any::<u8>(), 0..300), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
            let _ = SstableMeta::decode_section(&junk, 0);
            let mut bytes = meta.encode_section();
            let body = bytes.len() - CRC_LEN;
            for (i, v) in &flips {
                bytes[i.index(body)] = *v;
            }
            let crc = crc32c::crc32c(&bytes[..body]);
            bytes[body..].copy_from_slice(&crc.to_le_bytes());
            let _ = SstableMeta::decode_section(&bytes, 0);
        }
    }

    #[test]
    fn meta_fixed_len_matches_the_encoding() {
        let k = PartitionKey::from_serialized(Vec::new());
        let meta = SstableMeta {
            table: 0,
            shard: 0,
            generation: 0,
            file_size: 0,
            created_at: 0,
            min_token: k.token(),
            max_token: k.token(),
            first_key: k.clone(),
            last_key: k,
            min_timestamp: 0,
            max_timestamp: 0,
            partitions: 1,
            rows: 0,
            live_cells: 0,
            tombstones: 0,
            expiring_cells: 0,
            max_deletion_time: 0,
            data_blocks: 1,
            index_bytes: 0,
            bloom_bytes: 0,
        };
        assert_eq!(meta.encode_section().len(), MIN_META_SECTION_LEN);
    }

    #[test]
    fn stats_count_every_kind_of_cell_and_deletion() {
        let mut p = Partition { deletion: Some(Deletion { ts: 5, deleted_at: 50 }), ..Partition::default() };
        p.rows.insert(
            ClusteringKey::from_encoded(vec![1]),
            Row {
                marker: Some(Cell::Live { ts: 7, value: vec![] }),
                deletion: Some(Deletion { ts: 6, deleted_at: 60 }),
                cells: vec![
                    (0, Cell::Expiring { ts: 9, value: vec![1], ttl: 10, expires_at: 100 }),
                    (1, Cell::Tombstone { ts: 3, deleted_at: 70 }),
                ],
            },
        );
        let mut s = PartitionStats::default();
        s.add(&p);
        assert_eq!((s.partitions, s.rows, s.live_cells, s.expiring_cells, s.tombstones), (1, 1, 2, 1, 3));
        assert_eq!((s.min_timestamp, s.max_timestamp), (3, 9));
        // The live marker never expires.
        assert_eq!(s.max_deletion_time, u32::MAX);
    }
}
