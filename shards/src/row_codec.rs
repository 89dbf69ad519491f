//! The binary encoding of deletions, cells and rows, shared by every format that stores them
//! (WAL mutation batches, SSTable data blocks). Layouts: docs/FORMAT.md, "Mutation batch".

use wire::codec::{DecodeError, Reader, Writer};

use crate::cell::{Cell, Deletion};
use crate::mutation::MAX_VALUE_LEN;
use crate::row::{ColumnId, Row};

const CELL_LIVE: u8 = 0;
const CELL_EXPIRING: u8 = 1;
const CELL_TOMBSTONE: u8 = 2;
const ROW_HAS_MARKER: u8 = 1;
const ROW_HAS_DELETION: u8 = 2;

pub fn encode_deletion(w: &mut Writer, d: Option<Deletion>) {
    match d {
        None => {
            w.u8(0);
        }
        Some(d) => {
            w.u8(1).i64(d.ts).u32(d.deleted_at);
        }
    }
}

pub fn decode_deletion(r: &mut Reader<'_>) -> Result<Option<Deletion>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(Deletion { ts: r.i64()?, deleted_at: r.u32()? })),
        other => Err(r.invalid("deletion flag", format!("{other}"))),
    }
}

pub fn encode_cell(w: &mut Writer, cell: &Cell) {
    match cell {
        Cell::Live { ts, value } => {
            w.u8(CELL_LIVE).i64(*ts).bytes(value);
        }
        Cell::Expiring { ts, value, ttl, expires_at } => {
            w.u8(CELL_EXPIRING).i64(*ts).bytes(value).u32(*ttl).u32(*expires_at);
        }
        Cell::Tombstone { ts, deleted_at } => {
            w.u8(CELL_TOMBSTONE).i64(*ts).u32(*deleted_at);
        }
    }
}

pub fn decode_cell(r: &mut Reader<'_>) -> Result<Cell, DecodeError> {
    let kind = r.u8()?;
    let ts = r.i64()?;
    Ok(match kind {
        CELL_LIVE => Cell::Live { ts, value: r.bytes_limited(MAX_VALUE_LEN)?.to_vec() },
        CELL_EXPIRING => {
            let value = r.bytes_limited(MAX_VALUE_LEN)?.to_vec();
            Cell::Expiring { ts, value, ttl: r.u32()?, expires_at: r.u32()? }
        }
        CELL_TOMBSTONE => Cell::Tombstone { ts, deleted_at: r.u32()? },
        other => return Err(r.invalid("cell kind", format!("unknown kind {other}"))),
    })
}

/// A row without its clustering key: flags, marker, deletion, cells.
pub fn encode_row(w: &mut Writer, row: &Row) {
    let mut flags = 0;
    if row.marker.is_some() {
        flags |= ROW_HAS_MARKER;
    }
    if row.deletion.is_some() {
        flags |= ROW_HAS_DELETION;
    }
    w.u8(flags);
    if let Some(m) = &row.marker {
        encode_cell(w, m);
    }
    if let Some(d) = row.deletion {
        w.i64(d.ts).u32(d.deleted_at);
    }
    w.u32(row.cells.len() as u32);
    for (id, cell) in &row.cells {
        w.u16(*id);
        encode_cell(w, cell);
    }
}

/// Decodes a row written by [`encode_row`], refusing unknown flags and unsorted cells.
pub fn decode_row(r: &mut Reader<'_>) -> Result<Row, DecodeError> {
    let flags = r.u8()?;
    if flags & !(ROW_HAS_MARKER | ROW_HAS_DELETION) != 0 {
        return Err(r.invalid("row flags", format!("unknown flags {flags:#x}")));
    }
    let marker = if flags & ROW_HAS_MARKER != 0 { Some(decode_cell(r)?) } else { None };
    let deletion =
        if flags & ROW_HAS_DELETION != 0 { Some(Deletion { ts: r.i64()?, deleted_at: r.u32()? }) } else { None };
    let mut cells: Vec<(ColumnId, Cell)> = Vec::new();
    for _ in 0..r.count(15)? {
        let id = r.u16()?;
        if cells.last().is_some_and(|(prev, _)| *prev >= id) {
            return Err(r.invalid("cell order", "column ids not strictly increasing"));
        }
        cells.push((id, decode_cell(r)?));
    }
    Ok(Row { marker, deletion, cells })
}
