//! A fresh database on the testbed's PostgreSQL (`SANDBOXER_TEST_DATABASE_URL`,
//! set by `scripts/testbed env`), dropped when the test ends.

/// One scratch database; its URL is what `SANDBOXER_DATABASE_URL` takes.
pub struct PgScratch {
    admin: String,
    name: String,
    pub url: String,
}

impl PgScratch {
    /// A new, empty database. Panics (the test fails) when the testbed's
    /// PostgreSQL is not there: a test that needs it must not pass without.
    pub fn new() -> PgScratch {
        let admin = std::env::var("SANDBOXER_TEST_DATABASE_URL").unwrap_or_else(|_| {
            crate::testbed::missing(
                "a PostgreSQL test",
                "SANDBOXER_TEST_DATABASE_URL is not set",
                "run `scripts/testbed up` and `source .testbed/env`",
            )
        });
        let name = format!(
            "sbx_test_{}",
            &sandboxer_core::model::new_sandbox_id()["sbx-".len()..]
        );
        admin_sql(&admin, &format!("CREATE DATABASE {name}"));
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        PgScratch { admin, name, url }
    }
}

impl Default for PgScratch {
    fn default() -> Self {
        PgScratch::new()
    }
}

impl Drop for PgScratch {
    fn drop(&mut self) {
        admin_sql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Run one statement as the admin, on a thread of its own (the `postgres`
/// client runs its own runtime, which must not nest in a test's).
pub fn admin_sql(url: &str, sql: &str) {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("the testbed's PostgreSQL at {url}: {e}"));
        c.batch_execute(&sql).unwrap();
    })
    .join()
    .unwrap();
}
