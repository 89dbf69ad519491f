//! DESCRIBE TABLE: a schema rendered back as the CREATE TABLE statement that makes it. The text
//! re-parses to the same schema (columns in schema order, so column ids are kept); it never
//! mentions the table id, which the catalog assigns.

use std::fmt::Write as _;

use wire::schema::{ClusteringOrder, TableSchema};

use super::parser::is_reserved;

/// A name as it must be written to parse back to itself: bare when it is lowercase and not a
/// reserved word, else double-quoted.
pub fn quote_name(name: &str) -> String {
    let bare = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !is_reserved(name);
    if bare {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The CREATE TABLE statement of `schema`, in cqlsh's layout.
pub fn render_create_table(schema: &TableSchema) -> String {
    let mut out = format!("CREATE TABLE {} (\n", quote_name(&schema.name));
    for column in schema.all_columns() {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "    {} {},", quote_name(&column.name), column.ty);
    }
    let partition: Vec<String> = schema.partition_key.iter().map(|c| quote_name(&c.name)).collect();
    let mut key = match partition.as_slice() {
        [single] => single.clone(),
        many => format!("({})", many.join(", ")),
    };
    for c in &schema.clustering {
        key.push_str(", ");
        key.push_str(&quote_name(&c.column.name));
    }
    let _ = writeln!(out, "    PRIMARY KEY ({key})");
    out.push_str(") WITH ");
    if !schema.clustering.is_empty() {
        let order: Vec<String> = schema
            .clustering
            .iter()
            .map(|c| {
                let dir = if c.order == ClusteringOrder::Desc { "DESC" } else { "ASC" };
                format!("{} {dir}", quote_name(&c.column.name))
            })
            .collect();
        let _ = write!(out, "CLUSTERING ORDER BY ({})\n    AND ", order.join(", "));
    }
    let o = &schema.options;
    let _ = write!(
        out,
        "default_time_to_live = {}\n    AND gc_grace_seconds = {}\n    AND read_repair = '{}'\n    \
         AND replication_factor = {};",
        o.default_ttl_seconds,
        o.gc_grace_seconds,
        o.read_repair.name(),
        o.replication_factor
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cql::{parse_one, plan, Plan, Statement};
    use proptest::prelude::*;
    use std::sync::Arc;
    use wire::schema::{ClusteringColumn, ColumnDef, ReadRepair, TableOptions};
    use wire::ColumnType;

    fn reparse(text: &str) -> TableSchema {
        let statement = parse_one(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(matches!(statement, Statement::CreateTable(_)));
        let no_tables = |_: &str| -> Option<Arc<TableSchema>> { None };
        match plan(&statement, &no_tables) {
            Ok(Plan::CreateTable { schema, .. }) => schema,
            other => panic!("{other:?}\n{text}"),
        }
    }

    #[test]
    fn rendering_looks_like_cqlsh() {
        let schema = TableSchema {
            id: 3,
            name: "Events".into(),
            partition_key: vec![
                ColumnDef { name: "tenant".into(), ty: ColumnType::Text },
                ColumnDef { name: "day".into(), ty: ColumnType::Int },
            ],
            clustering: vec![ClusteringColumn {
                column: ColumnDef { name: "at".into(), ty: ColumnType::Timestamp },
                order: ClusteringOrder::Desc,
            }],
            columns: vec![ColumnDef { name: "select".into(), ty: ColumnType::Blob }],
            options: TableOptions {
                replication_factor: 3,
                gc_grace_seconds: 60,
                default_ttl_seconds: 0,
                read_repair: ReadRepair::None,
            },
        };
        let text = render_create_table(&schema);
        assert_eq!(
            text,
            "CREATE TABLE \"Events\" (\n    tenant text,\n    day int,\n    at timestamp,\n    \"select\" blob,\n    \
             PRIMARY KEY ((tenant, day), at)\n) WITH CLUSTERING ORDER BY (at DESC)\n    AND default_time_to_live = 0\n    \
             AND gc_grace_seconds = 60\n    AND read_repair = 'NONE'\n    AND replication_factor = 3;"
        );
        assert_eq!(reparse(&text), TableSchema { id: 0, ..schema });
    }

    fn any_name() -> BoxedStrategy<String> {
        prop_oneof![
            "[a-z][a-z0-9_]{0,8}",
            "[A-Za-z][A-Za-z0-9_]{0,8}",
            proptest::sample::select(vec!["select".to_owned(), "key".to_owned(), "ttl".to_owned(), "Token".to_owned()]),
        ]
        .boxed()
    }

    fn any_schema() -> impl Strategy<Value = TableSchema> {
        let column = (any_name(), proptest::sample::select(ColumnType::ALL.to_vec()))
            .prop_map(|(name, ty)| ColumnDef { name, ty })
            .boxed();
        let clustering = (column.clone(), any::<bool>()).prop_map(|(column, desc)| ClusteringColumn {
            column,
            order: if desc { ClusteringOrder::Desc } else { ClusteringOrder::Asc },
        });
        let modes = proptest::sample::select(ReadRepair::ALL.to_vec());
        let options = (1u8..=u8::MAX, any::<u32>(), 0..=shards::cell::MAX_TTL_SECONDS, modes).prop_map(
            |(replication_factor, gc_grace_seconds, default_ttl_seconds, read_repair)| TableOptions {
                replication_factor,
                gc_grace_seconds,
                default_ttl_seconds,
                read_repair,
            },
        );
        (
            any_name(),
            proptest::collection::vec(column.clone(), 1..4),
            proptest::collection::vec(clustering, 0..4),
            proptest::collection::vec(column, 0..5),
            options,
        )
            .prop_map(|(name, partition_key, clustering, columns, options)| TableSchema {
                id: 0,
                name,
                partition_key,
                clustering,
                columns,
                options,
            })
            .prop_filter("valid schemas only", |s| s.validate().is_ok())
    }

    proptest! {
        #[test]
        fn rendered_schema_reparses_to_the_same_schema(schema in any_schema()) {
            let text = render_create_table(&schema);
            prop_assert_eq!(reparse(&text), schema);
        }
    }
}
