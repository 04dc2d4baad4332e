//! The records: one table of registered uploads, in SQLite (`sqlite:<path>`, the local target)
//! or Postgres (`postgres://…`, the platform's database in a cluster). Every query is written
//! once, in SQL both accept, over a two-variant connection; refinery runs the versioned
//! migrations in `migrations/` at start, so a newer server upgrades the schema it finds.

use aether_artifact::control::{AppSummary, Register, ReleaseEntry};
use aether_artifact::{AppName, Digest};
use anyhow::{anyhow, bail, Context, Result};

mod embedded {
    refinery::embed_migrations!("migrations");
}

pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

/// A column value; enough for this schema (BIGINT and TEXT, TEXT nullable).
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Int(i64),
    Text(String),
    Null,
}

const COLUMNS: &str =
    "app, digest, seq, deps, bytes, published_by, published_at_ms, git_commit, provenance, signature";

impl Db {
    /// Opens `url` and brings its schema up to date.
    pub fn open(url: &str) -> Result<Db> {
        let mut db = if let Some(path) = url.strip_prefix("sqlite:") {
            let conn = rusqlite::Connection::open(path)
                .with_context(|| format!("opening the SQLite database {path}"))?;
            // Readers do not wait for the writer, and a second process waits instead of failing.
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            Db::Sqlite(conn)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let client = postgres::Client::connect(url, postgres::NoTls)
                .map_err(|e| anyhow!("connecting to Postgres at {}: {e}", redact(url)))?;
            Db::Postgres(client)
        } else {
            bail!(
                "unknown database URL {}: use sqlite:<path> or postgres://user:password@host/db",
                redact(url)
            );
        };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&mut self) -> Result<()> {
        let runner = embedded::migrations::runner();
        match self {
            Db::Sqlite(c) => runner.run(c).map(drop),
            Db::Postgres(c) => runner.run(c).map(drop),
        }
        .map_err(|e| anyhow!("migrating the database: {e}"))
    }

    /// Registers an upload; the first registration of a digest stands (returned with `false`).
    pub fn register(
        &mut self,
        app: &AppName,
        r: &Register,
        now_ms: u64,
    ) -> Result<(ReleaseEntry, bool)> {
        if let Some(e) = self.release(app, &r.digest)? {
            return Ok((e, false));
        }
        let seq = match self
            .query(
                "SELECT MAX(seq) FROM control_releases WHERE app = $1",
                &[text(app)],
            )?
            .first()
            .and_then(|r| r.first())
        {
            Some(Val::Int(n)) => *n + 1,
            _ => 1,
        };
        let opt = |o: &Option<String>| o.clone().map(Val::Text).unwrap_or(Val::Null);
        let sql = format!(
            "INSERT INTO control_releases ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        self.execute(
            &sql,
            &[
                text(app),
                text(&r.digest),
                Val::Int(seq),
                opt(&r.deps.map(|d| d.to_string())),
                Val::Int(r.bytes as i64),
                text(&r.published_by),
                Val::Int(now_ms as i64),
                opt(&r.git_commit),
                text(&r.provenance),
                opt(&r.signature),
            ],
        )?;
        let e = self
            .release(app, &r.digest)?
            .context("the registered release is not there after inserting it")?;
        Ok((e, true))
    }

    pub fn release(&mut self, app: &AppName, digest: &Digest) -> Result<Option<ReleaseEntry>> {
        let sql = format!("SELECT {COLUMNS} FROM control_releases WHERE app = $1 AND digest = $2");
        self.query(&sql, &[text(app), text(digest)])?
            .into_iter()
            .next()
            .map(entry)
            .transpose()
    }

    /// The app's releases, newest first.
    pub fn releases(&mut self, app: &AppName) -> Result<Vec<ReleaseEntry>> {
        let sql =
            format!("SELECT {COLUMNS} FROM control_releases WHERE app = $1 ORDER BY seq DESC");
        self.query(&sql, &[text(app)])?
            .into_iter()
            .map(entry)
            .collect()
    }

    pub fn apps(&mut self) -> Result<Vec<AppSummary>> {
        let sql = format!(
            "SELECT {COLUMNS}, (SELECT COUNT(*) FROM control_releases c WHERE c.app = r.app) \
             FROM control_releases r \
             WHERE seq = (SELECT MAX(seq) FROM control_releases m WHERE m.app = r.app) \
             ORDER BY app"
        );
        self.query(&sql, &[])?
            .into_iter()
            .map(|mut row| {
                let n = match row.pop() {
                    Some(Val::Int(n)) => n as u64,
                    other => bail!("a count of {other:?}"),
                };
                let latest = entry(row)?;
                Ok(AppSummary {
                    app: latest.app.clone(),
                    releases: n,
                    latest,
                })
            })
            .collect()
    }

    /// One round trip that proves the database answers.
    pub fn ping(&mut self) -> Result<()> {
        self.query("SELECT 1", &[]).map(drop)
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>> {
        match self {
            Db::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let n = stmt.column_count();
                let rows =
                    stmt.query_map(rusqlite::params_from_iter(params.iter().map(sqlite)), |r| {
                        (0..n)
                            .map(|i| {
                                Ok(match r.get_ref(i)? {
                                    rusqlite::types::ValueRef::Integer(v) => Val::Int(v),
                                    rusqlite::types::ValueRef::Text(t) => {
                                        Val::Text(String::from_utf8_lossy(t).into_owned())
                                    }
                                    _ => Val::Null,
                                })
                            })
                            .collect::<rusqlite::Result<Vec<Val>>>()
                    })?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            }
            Db::Postgres(c) => {
                let boxed = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    boxed.iter().map(|b| b.as_ref()).collect();
                let rows = c.query(sql, &refs)?;
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| {
                                use postgres::types::Type;
                                let ty = r.columns()[i].type_();
                                Ok(if *ty == Type::INT8 {
                                    r.try_get::<_, Option<i64>>(i)?.map(Val::Int)
                                } else if *ty == Type::INT4 {
                                    r.try_get::<_, Option<i32>>(i)?.map(|v| Val::Int(v.into()))
                                } else {
                                    r.try_get::<_, Option<String>>(i)?.map(Val::Text)
                                }
                                .unwrap_or(Val::Null))
                            })
                            .collect::<Result<Vec<Val>>>()
                    })
                    .collect()
            }
        }
    }

    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        match self {
            Db::Sqlite(c) => Ok(c
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params.iter().map(sqlite)))?
                as u64),
            Db::Postgres(c) => {
                let boxed = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    boxed.iter().map(|b| b.as_ref()).collect();
                Ok(c.execute(sql, &refs)?)
            }
        }
    }
}

fn text(v: &impl ToString) -> Val {
    Val::Text(v.to_string())
}

fn sqlite(v: &Val) -> rusqlite::types::Value {
    match v {
        Val::Int(i) => rusqlite::types::Value::Integer(*i),
        Val::Text(t) => rusqlite::types::Value::Text(t.clone()),
        Val::Null => rusqlite::types::Value::Null,
    }
}

fn pg_params(params: &[Val]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    params
        .iter()
        .map(|v| -> Box<dyn postgres::types::ToSql + Sync> {
            match v {
                Val::Int(i) => Box::new(*i),
                Val::Text(t) => Box::new(t.clone()),
                Val::Null => Box::new(None::<String>),
            }
        })
        .collect()
}

fn entry(row: Vec<Val>) -> Result<ReleaseEntry> {
    let mut it = row.into_iter();
    let mut next = || it.next().unwrap_or(Val::Null);
    let s = |v: Val| match v {
        Val::Text(t) => Ok(t),
        other => Err(anyhow!("expected text, found {other:?}")),
    };
    let o = |v: Val| match v {
        Val::Text(t) => Ok(Some(t)),
        Val::Null => Ok(None),
        other => Err(anyhow!("expected text, found {other:?}")),
    };
    let n = |v: Val| match v {
        Val::Int(i) => Ok(i as u64),
        other => Err(anyhow!("expected a number, found {other:?}")),
    };
    Ok(ReleaseEntry {
        app: s(next())?,
        digest: Digest::parse(&s(next())?)?,
        seq: n(next())?,
        deps: o(next())?.map(|d| Digest::parse(&d)).transpose()?,
        bytes: n(next())?,
        published_by: s(next())?,
        published_at_ms: n(next())?,
        git_commit: o(next())?,
        provenance: s(next())?,
        signature: o(next())?,
    })
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}
