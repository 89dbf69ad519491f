//! Permissions and the resources they are granted on (Cassandra's data resources, without
//! keyspaces: every table is in the node's one namespace), and the resolution of a role's
//! grants into what it may do. Pure: no storage, no clock.

use std::fmt;

/// One permission, as GRANT names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    Select,
    Modify,
    Create,
    Drop,
    Alter,
    Authorize,
}

impl Permission {
    pub const ALL: [Permission; 6] = [
        Permission::Select,
        Permission::Modify,
        Permission::Create,
        Permission::Drop,
        Permission::Alter,
        Permission::Authorize,
    ];

    /// The CQL name (`SELECT`), as statements, stored rows and error messages spell it.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Select => "SELECT",
            Permission::Modify => "MODIFY",
            Permission::Create => "CREATE",
            Permission::Drop => "DROP",
            Permission::Alter => "ALTER",
            Permission::Authorize => "AUTHORIZE",
        }
    }

    /// Parses a name in any case.
    pub fn parse(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(name))
    }

    fn bit(self) -> u8 {
        1 << Permission::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct PermissionSet(u8);

impl PermissionSet {
    pub const NONE: PermissionSet = PermissionSet(0);

    /// Every permission (`ALL PERMISSIONS`).
    pub fn all() -> PermissionSet {
        Permission::ALL.into_iter().collect()
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn union(self, other: PermissionSet) -> PermissionSet {
        PermissionSet(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// In the order of [`Permission::ALL`].
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> PermissionSet {
        PermissionSet(iter.into_iter().fold(0, |bits, p| bits | p.bit()))
    }
}

/// What a permission is granted on: every table (`ALL KEYSPACES`), or one table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    AllTables,
    Table(String),
}

/// The stored name of [`Resource::AllTables`] (Cassandra's root data resource).
const ROOT: &str = "data";

impl Resource {
    /// The stored form: `data` or `data/<table>` (Cassandra's resource names).
    pub fn stored(&self) -> String {
        match self {
            Resource::AllTables => ROOT.to_owned(),
            Resource::Table(t) => format!("{ROOT}/{t}"),
        }
    }

    /// Reads [`stored`](Self::stored) back; `None` for anything else.
    pub fn from_stored(text: &str) -> Option<Resource> {
        match text.strip_prefix(ROOT)? {
            "" => Some(Resource::AllTables),
            rest => rest.strip_prefix('/').filter(|t| !t.is_empty()).map(|t| Resource::Table(t.to_owned())),
        }
    }

    /// The resource and the resources above it, most specific first.
    pub fn chain(&self) -> Vec<Resource> {
        match self {
            Resource::AllTables => vec![Resource::AllTables],
            Resource::Table(_) => vec![self.clone(), Resource::AllTables],
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::AllTables => f.write_str("<all keyspaces>"),
            Resource::Table(t) => write!(f, "<table {t}>"),
        }
    }
}

/// A role's grants: what it was granted on each resource.
pub type Grants = Vec<(Resource, PermissionSet)>;

/// What a role may do on `resource`, given its grants: the union of what it was granted on the
/// resource and on every resource above it. A superuser may do everything.
pub fn permitted(superuser: bool, grants: &[(Resource, PermissionSet)], resource: &Resource) -> PermissionSet {
    if superuser {
        return PermissionSet::all();
    }
    let chain = resource.chain();
    grants.iter().filter(|(on, _)| chain.contains(on)).fold(PermissionSet::NONE, |acc, (_, set)| acc.union(*set))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ps: &[Permission]) -> PermissionSet {
        ps.iter().copied().collect()
    }

    #[test]
    fn grants_on_all_tables_reach_every_table_and_table_grants_stay_on_theirs() {
        let t = |name: &str| Resource::Table(name.into());
        let grants = vec![(Resource::AllTables, set(&[Permission::Select])), (t("a"), set(&[Permission::Modify]))];
        let on_a = permitted(false, &grants, &t("a"));
        assert!(on_a.contains(Permission::Select) && on_a.contains(Permission::Modify));
        let on_b = permitted(false, &grants, &t("b"));
        assert!(on_b.contains(Permission::Select) && !on_b.contains(Permission::Modify));
        let on_all = permitted(false, &grants, &Resource::AllTables);
        assert_eq!(on_all, set(&[Permission::Select]), "a table's grant does not reach its parent");
        assert_eq!(permitted(false, &[], &t("a")), PermissionSet::NONE);
        assert_eq!(permitted(true, &[], &t("a")), PermissionSet::all());
    }

    #[test]
    fn names_and_stored_resources_read_back() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(&p.name().to_lowercase()), Some(p));
        }
        assert_eq!(Permission::parse("execute"), None);
        for r in [Resource::AllTables, Resource::Table("events".into())] {
            assert_eq!(Resource::from_stored(&r.stored()), Some(r));
        }
        assert_eq!(Resource::from_stored("data/"), None);
        assert_eq!(Resource::from_stored("roles/alice"), None);
        assert_eq!(PermissionSet::all().iter().count(), Permission::ALL.len());
        assert!(PermissionSet::NONE.is_empty());
    }
}
