//! The durable store of a gestore. One idea carries durability: **every obligation is a row**.
//! When a point of the provider accepts a message it commits, in one [`Batch`], the message and all
//! the work it now owes (receipts to deliver, envelopes to send, timers to arm, log records); only
//! then does SMTP answer 250. Workers take due rows, do them idempotently and mark them done, so a
//! crash at any point leaves work to redo and nothing lost.
//!
//! The [`Store`] trait is the one interface; [`SqlStore`] implements it on SQLite (embedded, the
//! default; [`SqliteStore`] is its old name) or on PostgreSQL (`store: { postgres: URL }`). Both run
//! ONE body of SQL through sqlx's `Any` driver: `$N` placeholders and `ON CONFLICT` work on SQLite
//! and PostgreSQL 15 alike (dependencies.md §1.6). What differs (schema types, pragmas, locking) is
//! in the "Backend-specific SQL" section below and nowhere else. Times are stored as UTC
//! milliseconds.

use crate::config::StoreConfig;
use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions, Executor, Row, Transaction};
use std::path::Path;
use tokio::sync::watch;

/// A store error: says which operation failed and why.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("store: {op}: {source}")]
    Db {
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// A row holds data the program cannot read back.
    #[error("store: corrupt row: {0}")]
    Corrupt(String),
    /// The store cannot be opened as configured.
    #[error("store: {0}")]
    Config(String),
}

fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Db { op, source }
}

/// One operation of a [`Batch`].
#[derive(Debug, Clone)]
pub enum Op {
    /// Store a message in a mailbox folder (delivery point, RFC 6109 §3.3: stored unmodified).
    Deliver {
        /// The mailbox (the holder's address).
        mailbox: String,
        /// The folder, `INBOX` unless said otherwise.
        folder: String,
        /// The whole message.
        raw: Vec<u8>,
        /// The PEC kind id (`pec_formats::kind::Kind::id`) or `ordinary`.
        kind: String,
        /// Its Message-ID, if any.
        message_id: Option<String>,
    },
    /// Record a certified transaction at the sender's provider (access point).
    Transaction {
        /// The identificativo (PEC msgid).
        identificativo: String,
        /// The sender (reverse-path).
        sender: String,
        /// The client's Message-ID.
        client_msgid: Option<String>,
        /// The original subject.
        subject: String,
        /// The receipt type asked for.
        tipo_ricevuta: String,
        /// Each recipient: address, `certificato`/`esterno`.
        recipients: Vec<(String, String)>,
        /// The certification data as the ricevuta di accettazione's daticert.xml carries it, from
        /// which later notices of the transaction (timeouts) are built.
        daticert: String,
    },
    /// Set a recipient's state in a transaction (e.g. `presa-in-carico`, `consegnato`, `errore`).
    RecipientState {
        /// The transaction.
        identificativo: String,
        /// The recipient.
        address: String,
        /// The new state.
        state: String,
    },
    /// Queue a message for sending (or local hand-over). `key` makes it idempotent: a second
    /// enqueue with the same key is ignored, so no receipt is ever queued twice.
    Enqueue {
        /// Idempotency key, e.g. `consegna:<identificativo>:<recipient>`.
        key: String,
        /// SMTP reverse-path.
        mail_from: String,
        /// SMTP forward-paths.
        rcpts: Vec<String>,
        /// The message.
        raw: Vec<u8>,
    },
    /// Arm a timer (RFC 6109 §3.1.6). Idempotent on (identificativo, address, phase).
    ArmTimer {
        /// The transaction.
        identificativo: String,
        /// The certified recipient.
        address: String,
        /// `12h` or `24h`.
        phase: String,
        /// When it fires.
        due: DateTime<Utc>,
    },
    /// Cancel timers of a recipient (all phases listed).
    CancelTimers {
        /// The transaction.
        identificativo: String,
        /// The recipient.
        address: String,
        /// The phases to cancel.
        phases: Vec<String>,
    },
    /// Mark a timer fired (with the notice it produced enqueued in the same batch).
    TimerFired {
        /// The transaction.
        identificativo: String,
        /// The recipient.
        address: String,
        /// The phase.
        phase: String,
    },
    /// Remember an inbound Message-ID; the batch fails with [`CommitOutcome::Duplicate`] if it was
    /// seen before, which makes re-sent messages (after a sender's crash) harmless.
    Seen {
        /// The Message-ID.
        message_id: String,
    },
    /// Keep an infected message (RFC 6109 §2.2.4; 30 months, DPR 68/2005 art. 12).
    Virus {
        /// Where it was found: `access-point` or `reception-point`.
        point: String,
        /// The virus name.
        virus: String,
        /// The identificativo, if the message had one.
        identificativo: Option<String>,
        /// The message.
        raw: Vec<u8>,
    },
    /// A log record (RFC 6109 §2.3; digest §11).
    Log(LogRecord),
    /// The peer took outbox item `id` for `rcpts` (one SMTP transaction completed): they leave the
    /// item's recipients, so a restart sends only to the others (RFC 5321 §4.5.4.1); with none
    /// left the item is done. Committed with the hand-over's `invio` record ([`Op::Log`]), so the
    /// record and the outbox change happen together or not at all (digest §11).
    OutboxTaken {
        /// The outbox row.
        id: i64,
        /// The recipients the peer accepted.
        rcpts: Vec<String>,
        /// The peer's final reply.
        reply: String,
    },
}

/// A record of the message log (registro): every field of RFC 6109 §2.3.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRecord {
    /// Event type: `accettazione`, `non-accettazione`, `ricezione`, `presa-in-carico`,
    /// `consegna`, `mancata-consegna`, `anomalia`, `virus`, `preavviso-12h`, `mancata-consegna-24h`, …
    pub event: String,
    /// The message id the event concerns (identificativo, or Message-ID for non-PEC mail).
    pub msgid: String,
    /// The sender of the original.
    pub sender: String,
    /// The recipients of the original.
    pub recipients: Vec<String>,
    /// The subject of the original.
    pub subject: String,
    /// Ids of related generated messages.
    pub related: Vec<String>,
    /// The sending provider.
    pub provider: String,
}

/// All the work of one event, committed atomically.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The time value of the transaction (one per transaction, RFC 6109 §4.1).
    pub at: DateTime<Utc>,
    /// The operations, applied in order.
    pub ops: Vec<Op>,
}

impl Batch {
    /// An empty batch at `at`.
    pub fn new(at: DateTime<Utc>) -> Batch {
        Batch {
            at,
            ops: Vec::new(),
        }
    }
    /// Adds an operation.
    pub fn push(&mut self, op: Op) -> &mut Batch {
        self.ops.push(op);
        self
    }
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Everything was written.
    Committed,
    /// A [`Op::Seen`] Message-ID had been seen before: nothing was written.
    Duplicate,
}

/// A queued message due for sending.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    /// Row id.
    pub id: i64,
    /// Idempotency key.
    pub key: String,
    /// SMTP reverse-path.
    pub mail_from: String,
    /// SMTP forward-paths.
    pub rcpts: Vec<String>,
    /// The message.
    pub raw: Vec<u8>,
    /// Attempts made so far.
    pub attempts: i64,
}

/// A timer due to fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    /// The transaction.
    pub identificativo: String,
    /// The recipient.
    pub address: String,
    /// `12h` or `24h`.
    pub phase: String,
    /// When it was due.
    pub due: DateTime<Utc>,
}

/// A message in a mailbox.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// The per-folder UID.
    pub uid: i64,
    /// The PEC kind id or `ordinary`.
    pub kind: String,
    /// Its Message-ID.
    pub message_id: Option<String>,
    /// When it was stored.
    pub internal_date: DateTime<Utc>,
    /// The whole message.
    pub raw: Vec<u8>,
}

/// A recipient's row of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientRow {
    /// The address.
    pub address: String,
    /// `certificato` or `esterno`.
    pub tipo: String,
    /// The state (`inviato`, `presa-in-carico`, `consegnato`, `errore`, `scaduto`).
    pub state: String,
}

/// The one storage interface of a gestore.
#[allow(async_fn_in_trait)]
pub trait Store: Send + Sync {
    /// Applies a batch atomically.
    async fn commit(&self, batch: Batch) -> Result<CommitOutcome, StoreError>;
    /// Queued messages due at `now`, oldest first, at most `limit`, leased or not: this only
    /// reads (a worker takes its items with [`Store::claim_outbox`]).
    async fn due_outbox(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<OutboxItem>, StoreError>;
    /// Marks a queued message sent, with the peer's final reply.
    async fn outbox_done(&self, id: i64, reply: &str) -> Result<(), StoreError>;
    /// Reschedules a queued message after a failed attempt; `give_up` marks it failed for good.
    async fn outbox_retry(
        &self,
        id: i64,
        next: DateTime<Utc>,
        reply: &str,
        give_up: bool,
    ) -> Result<(), StoreError>;
    /// The earliest pending outbox or timer time, to sleep until.
    async fn next_wakeup(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Armed timers due at `now`.
    async fn due_timers(&self, now: DateTime<Utc>) -> Result<Vec<DueTimer>, StoreError>;
    /// The daticert.xml of a transaction's ricevuta di accettazione ([`Op::Transaction`]).
    async fn transaction_daticert(
        &self,
        identificativo: &str,
    ) -> Result<Option<String>, StoreError>;
    /// The recipients of a transaction.
    async fn recipients(&self, identificativo: &str) -> Result<Vec<RecipientRow>, StoreError>;
    /// The messages of a mailbox folder, in UID order.
    async fn mailbox(&self, mailbox: &str, folder: &str) -> Result<Vec<StoredMessage>, StoreError>;
    /// The total size of a mailbox, for the quota.
    async fn mailbox_size(&self, mailbox: &str) -> Result<i64, StoreError>;
    /// Every log record, in order.
    async fn log(&self) -> Result<Vec<LogRecord>, StoreError>;
    /// Creates a mailbox account, or replaces its password and quota if it exists.
    async fn put_account(&self, account: &Account) -> Result<(), StoreError>;
    /// The account of a mailbox (case-insensitive address).
    async fn account(&self, address: &str) -> Result<Option<Account>, StoreError>;

    // Mailbox access (IMAP, RFC 3501; POP3, RFC 1939). Folder names are compared exactly, except
    // INBOX, which is case-insensitive (RFC 3501 §5.1).

    /// The folders of a mailbox, by name. INBOX and Sent always exist once the account does.
    async fn folders(&self, mailbox: &str) -> Result<Vec<FolderInfo>, StoreError>;
    /// One folder, with its counts.
    async fn folder(&self, mailbox: &str, name: &str) -> Result<Option<FolderInfo>, StoreError>;
    /// Creates a folder; `false` if it already exists.
    async fn create_folder(&self, mailbox: &str, name: &str) -> Result<bool, StoreError>;
    /// Deletes a folder and its messages; `false` if it does not exist.
    async fn delete_folder(&self, mailbox: &str, name: &str) -> Result<bool, StoreError>;
    /// Renames a folder with its messages (and its subfolders `from/...`); `false` if `from` is
    /// missing or `to` exists.
    async fn rename_folder(&self, mailbox: &str, from: &str, to: &str) -> Result<bool, StoreError>;
    /// The messages of a folder without their bodies, in UID order.
    async fn messages(&self, mailbox: &str, folder: &str) -> Result<Vec<MessageMeta>, StoreError>;
    /// The whole text of one message.
    async fn message_raw(
        &self,
        mailbox: &str,
        folder: &str,
        uid: i64,
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the flags of one message.
    async fn set_flags(
        &self,
        mailbox: &str,
        folder: &str,
        uid: i64,
        flags: &[String],
    ) -> Result<(), StoreError>;
    /// Removes messages for good (IMAP EXPUNGE, POP3 UPDATE state); returns how many.
    async fn delete_messages(
        &self,
        mailbox: &str,
        folder: &str,
        uids: &[i64],
    ) -> Result<u64, StoreError>;
    /// Copies messages (with flags and internal date) to another folder of the same mailbox;
    /// returns the new UIDs in order. The target must exist.
    async fn copy_messages(
        &self,
        mailbox: &str,
        from: &str,
        uids: &[i64],
        to: &str,
    ) -> Result<Vec<i64>, StoreError>;
    /// Stores a message a client uploads (IMAP APPEND) into an existing folder; returns its UID.
    async fn append(
        &self,
        mailbox: &str,
        folder: &str,
        raw: &[u8],
        flags: &[String],
        internal_date: DateTime<Utc>,
    ) -> Result<i64, StoreError>;
    /// Removes an account with all its folders and messages.
    async fn delete_mailbox(&self, address: &str) -> Result<(), StoreError>;
    /// A receiver that changes whenever a mailbox's content changes (deliveries, appends, expunges,
    /// flag changes): IMAP IDLE waits on it (RFC 2177).
    fn changes(&self) -> watch::Receiver<u64>;
    /// Keeps an outbox item pending with only `rcpts` left (the others were taken or failed for
    /// good: RFC 5321 §4.5.4.1), due again at `next`, counting one more attempt.
    async fn outbox_retry_rcpts(
        &self,
        id: i64,
        rcpts: &[String],
        next: DateTime<Utc>,
        reply: &str,
    ) -> Result<(), StoreError>;
    /// Claims up to `limit` outbox items due at `now` (oldest first) for one worker: each is
    /// leased until `until`, and no other claimer gets it before then, in this process or another
    /// on the same database. [`Store::outbox_done`], [`Store::outbox_retry`] and
    /// [`Store::outbox_retry_rcpts`] release the lease; a worker that dies keeps it until `until`.
    async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        until: DateTime<Utc>,
    ) -> Result<Vec<OutboxItem>, StoreError>;
    /// Releases every outbox lease (a SQLite store has one writing process: at its start no lease
    /// is held by a live worker). Returns how many were released.
    async fn release_outbox_leases(&self) -> Result<u64, StoreError>;
    /// Moves messages to another folder of the same mailbox in one transaction (IMAP MOVE,
    /// RFC 6851 §3.3: all or nothing): the copies (flags and internal date kept) and the removal
    /// of the originals. Returns the new UIDs in order; a UID not in `from` is skipped.
    async fn move_messages(
        &self,
        mailbox: &str,
        from: &str,
        uids: &[i64],
        to: &str,
    ) -> Result<Vec<i64>, StoreError>;
}

/// A mailbox folder and its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    /// The name (`INBOX`, `Sent`, `Archivio/2025`...).
    pub name: String,
    /// RFC 3501 §2.3.1.1 UIDVALIDITY.
    pub uidvalidity: u32,
    /// The UID the next message will get.
    pub uidnext: i64,
    /// How many messages.
    pub messages: i64,
    /// How many without `\Seen`.
    pub unseen: i64,
}

/// A message of a folder without its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// Its UID.
    pub uid: i64,
    /// Its flags (`\Seen`, `\Deleted`, keywords...).
    pub flags: Vec<String>,
    /// Its size in bytes.
    pub size: i64,
    /// When it was stored (IMAP INTERNALDATE).
    pub internal_date: DateTime<Utc>,
}

/// The stored spelling of a folder name: INBOX in any case is `INBOX` (RFC 3501 §5.1).
pub fn canonical_folder(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".into()
    } else {
        name.to_string()
    }
}

fn flags_text(flags: &[String]) -> String {
    flags.join(" ")
}

fn parse_flags(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// Creates a folder if missing. UIDVALIDITY: the current second, or one more than any folder has,
/// so a folder deleted and created again never reuses a value (RFC 3501 §2.3.1.1).
async fn ensure_folder(
    conn: &mut AnyConnection,
    mailbox: &str,
    folder: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    // A CASE rather than SQLite's two-argument MAX (PostgreSQL spells it GREATEST); `WHERE true`
    // before ON CONFLICT: SQLite's parser needs it after a SELECT with a FROM.
    let r = sqlx::query(
        "INSERT INTO folders (mailbox, name, uidvalidity, uidnext)
         SELECT $1, $2, CASE WHEN $3 > m THEN $4 ELSE m END, 1
         FROM (SELECT COALESCE(MAX(uidvalidity), 0) + 1 AS m FROM folders) AS latest WHERE true
         ON CONFLICT DO NOTHING",
    )
    .bind(mailbox)
    .bind(folder)
    .bind((now_ms / 1000) % 4_000_000_000)
    .bind((now_ms / 1000) % 4_000_000_000)
    .execute(&mut *conn)
    .await
    .map_err(db("create folder"))?;
    Ok(r.rows_affected() == 1)
}

/// Takes the next UID of a folder (creating the folder if missing).
async fn take_uid(
    conn: &mut AnyConnection,
    mailbox: &str,
    folder: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    ensure_folder(conn, mailbox, folder, now_ms).await?;
    Ok(sqlx::query(
        "UPDATE folders SET uidnext = uidnext + 1 WHERE mailbox = $1 AND name = $2
         RETURNING uidnext - 1",
    )
    .bind(mailbox)
    .bind(folder)
    .fetch_one(&mut *conn)
    .await
    .map_err(db("take uid"))?
    .get(0))
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A PEC mailbox holder's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The mailbox address.
    pub address: String,
    /// The password hash ([`crate::password`]).
    pub password_hash: String,
    /// The quota in bytes (a full mailbox gets mancata consegna, RFC 6109 §3.3.3).
    pub quota: i64,
    /// A disabled mailbox refuses login and delivery.
    pub disabled: bool,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS accounts (
        address TEXT PRIMARY KEY COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        quota INTEGER NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS mailbox_messages (
        id INTEGER PRIMARY KEY,
        mailbox TEXT NOT NULL COLLATE NOCASE,
        folder TEXT NOT NULL,
        uid INTEGER NOT NULL,
        kind TEXT NOT NULL,
        message_id TEXT,
        raw BLOB NOT NULL,
        size INTEGER NOT NULL,
        internal_date INTEGER NOT NULL,
        flags TEXT NOT NULL DEFAULT '',
        UNIQUE (mailbox, folder, uid))",
    // IMAP folders (RFC 3501 §2.3.1.1): UIDVALIDITY per folder, UIDNEXT strictly increasing so a UID
    // is never reused after an expunge.
    "CREATE TABLE IF NOT EXISTS folders (
        mailbox TEXT NOT NULL COLLATE NOCASE,
        name TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uidnext INTEGER NOT NULL,
        PRIMARY KEY (mailbox, name))",
    // Databases written before the folders table: one folder row per existing (mailbox, folder).
    // (`WHERE true`: SQLite's parser needs it before an upsert's ON CONFLICT after a SELECT.)
    "INSERT INTO folders (mailbox, name, uidvalidity, uidnext)
        SELECT mailbox, folder, 1, MAX(uid) + 1 FROM mailbox_messages WHERE true
        GROUP BY mailbox, folder ON CONFLICT DO NOTHING",
    // RFC 3501 §2.3.2 \Recent: the highest UID an IMAP session has already claimed, per folder
    // incarnation (a folder created again has a new UIDVALIDITY).
    "CREATE TABLE IF NOT EXISTS imap_recent (
        mailbox TEXT NOT NULL COLLATE NOCASE,
        folder TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        last_uid INTEGER NOT NULL,
        PRIMARY KEY (mailbox, folder, uidvalidity))",
    "CREATE TABLE IF NOT EXISTS transactions (
        identificativo TEXT PRIMARY KEY,
        sender TEXT NOT NULL,
        client_msgid TEXT,
        subject TEXT NOT NULL,
        tipo_ricevuta TEXT NOT NULL,
        accepted_at INTEGER NOT NULL,
        daticert TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS recipients (
        identificativo TEXT NOT NULL,
        address TEXT NOT NULL COLLATE NOCASE,
        tipo TEXT NOT NULL,
        state TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (identificativo, address))",
    "CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        mail_from TEXT NOT NULL,
        rcpts TEXT NOT NULL,
        raw BLOB NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt INTEGER NOT NULL,
        last_reply TEXT,
        created_at INTEGER NOT NULL,
        lease_until INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt)",
    "CREATE TABLE IF NOT EXISTS timers (
        identificativo TEXT NOT NULL,
        address TEXT NOT NULL COLLATE NOCASE,
        phase TEXT NOT NULL,
        due INTEGER NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (identificativo, address, phase))",
    "CREATE INDEX IF NOT EXISTS timers_due ON timers (state, due)",
    "CREATE TABLE IF NOT EXISTS seen (message_id TEXT PRIMARY KEY, at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS virus_store (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        point TEXT NOT NULL,
        virus TEXT NOT NULL,
        identificativo TEXT,
        raw BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS log (
        seq INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        event TEXT NOT NULL,
        msgid TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipients TEXT NOT NULL,
        subject TEXT NOT NULL,
        related TEXT NOT NULL,
        provider TEXT NOT NULL,
        prev TEXT NOT NULL DEFAULT '',
        hash TEXT NOT NULL DEFAULT '',
        canon TEXT NOT NULL DEFAULT '')",
];

/// The database a [`SqlStore`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (WAL, `synchronous=FULL`: a commit is on disk before SMTP says 250).
    Sqlite,
    /// A PostgreSQL 15 server (a commit is flushed to its WAL before it returns:
    /// `synchronous_commit=on`, the default).
    Postgres,
}

/// The store of a gestore on SQLite or PostgreSQL (one body of SQL, sqlx `Any` driver).
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    changes: std::sync::Arc<watch::Sender<u64>>,
}

/// The store's old name, from when SQLite was the only backend.
pub type SqliteStore = SqlStore;

// ---- Backend-specific SQL. Everything that differs between SQLite and PostgreSQL is here. ----

/// The SQLite pragmas of every connection (they are per connection, so set on each connect):
/// WAL lets a read-only process read while the gestore writes; `synchronous=FULL` puts a commit
/// on disk before it returns, so SMTP says 250 only for what survives a crash.
const SQLITE_PRAGMAS: &[&str] = &["PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL"];

/// How long a SQLite connection waits for a lock (a checkpoint, another process) before failing.
const SQLITE_BUSY: &str = "PRAGMA busy_timeout = 30000";

/// PostgreSQL set-up before the schema. SQLite's `COLLATE NOCASE` (addresses compare without case)
/// becomes a nondeterministic ICU collation named `nocase`, so the same column definitions, primary
/// keys and `=` comparisons work unchanged (PostgreSQL folds the unquoted name to lower case).
const POSTGRES_SETUP: &[&str] = &["CREATE COLLATION IF NOT EXISTS nocase
        (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"];

/// The key of the PostgreSQL advisory lock every write transaction takes ([`SqlStore::begin`]).
/// SQLite has one writer at a time by construction (one connection); this lock gives PostgreSQL the
/// same, so a batch's reads (the log chain's last hash, a folder's next UID, the `\Recent` mark)
/// cannot interleave with another writer's, whichever process it is in. RFC 6109 §4.1 numbers.
const POSTGRES_WRITE_LOCK: i64 = 6109;

/// The claim of due outbox items ([`Store::claim_outbox`]), `$lock` after the inner SELECT.
macro_rules! claim_outbox_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE outbox SET lease_until = $1 WHERE id IN (
               SELECT id FROM outbox
               WHERE state = 'pending' AND next_attempt <= $2 AND lease_until <= $3
               ORDER BY next_attempt, id LIMIT $4",
            $lock,
            ") RETURNING id, key, mail_from, rcpts, raw, attempts, next_attempt"
        )
    };
}

/// The claim statement for `backend`. PostgreSQL: `FOR UPDATE SKIP LOCKED`, so concurrent
/// claimers (other processes on the same database) each lock their own rows and skip the others';
/// a row another claimer committed meanwhile is re-checked and, leased, left out. SQLite has one
/// writer at a time: the one statement is atomic as it stands.
fn claim_outbox_statement(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => claim_outbox_sql!(""),
        Backend::Postgres => claim_outbox_sql!(" FOR UPDATE SKIP LOCKED"),
    }
}

/// Adds the outbox lease column to a database written before it ([`Store::claim_outbox`]).
async fn migrate_outbox_lease(store: &SqlStore) -> Result<(), sqlx::Error> {
    let add = "ALTER TABLE outbox ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0";
    match store.backend {
        Backend::Sqlite => {
            let has: i64 = sqlx::query(
                "SELECT COUNT(*) FROM pragma_table_info('outbox') WHERE name = 'lease_until'",
            )
            .fetch_one(&store.pool)
            .await?
            .get(0);
            if has == 0 {
                sqlx::query(add).execute(&store.pool).await?;
            }
        }
        Backend::Postgres => {
            sqlx::query(
                "ALTER TABLE outbox ADD COLUMN IF NOT EXISTS lease_until BIGINT NOT NULL DEFAULT 0",
            )
            .execute(&store.pool)
            .await?;
        }
    }
    Ok(())
}

/// A schema statement for `backend`. The statements are written for SQLite; PostgreSQL gets
/// 64-bit integers (SQLite's INTEGER is 64-bit, PostgreSQL's 32), BYTEA for BLOB, identity columns
/// for SQLite's `INTEGER PRIMARY KEY` row ids, and an explicit `rowid` column where a query orders
/// by SQLite's implicit one (recipients, in the order given). Text compares bytewise as in SQLite
/// (`COLLATE "C"`, so `ORDER BY name` does not follow the server's locale), except the NOCASE
/// address columns ([`POSTGRES_SETUP`]).
fn schema_statement(backend: Backend, stmt: &str) -> String {
    match backend {
        Backend::Sqlite => stmt.to_string(),
        Backend::Postgres => stmt
            .lines()
            .map(|l| {
                if l.contains("NOCASE") {
                    l.to_string()
                } else {
                    l.replace(" TEXT", " TEXT COLLATE \"C\"")
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            .replace(
                "INTEGER PRIMARY KEY",
                "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            )
            .replace(" INTEGER", " BIGINT")
            .replace(" BLOB", " BYTEA")
            .replace(
                "CREATE TABLE IF NOT EXISTS recipients (",
                "CREATE TABLE IF NOT EXISTS recipients (
        rowid BIGINT GENERATED ALWAYS AS IDENTITY,",
            ),
    }
}

impl SqlStore {
    /// Opens a pool on `url` and prepares every connection for `backend`.
    async fn connect(
        backend: Backend,
        opts: AnyConnectOptions,
        read_only: bool,
    ) -> Result<AnyPool, StoreError> {
        sqlx::any::install_default_drivers();
        let pool = match backend {
            // One connection: SQLite serialises writers anyway, and a single connection kept for
            // the pool's life keeps an in-memory database one database.
            Backend::Sqlite => AnyPoolOptions::new()
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        conn.execute(SQLITE_BUSY).await?;
                        if !read_only {
                            for p in SQLITE_PRAGMAS {
                                conn.execute(*p).await?;
                            }
                        }
                        Ok(())
                    })
                }),
            Backend::Postgres => AnyPoolOptions::new().max_connections(8),
        };
        pool.connect_with(opts).await.map_err(db("open"))
    }

    fn with_pool(backend: Backend, pool: AnyPool) -> SqlStore {
        SqlStore {
            pool,
            backend,
            changes: std::sync::Arc::new(watch::channel(0).0),
        }
    }

    /// Begins a write transaction: on PostgreSQL it first takes the store's write lock
    /// ([`POSTGRES_WRITE_LOCK`]), released at commit or rollback.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("begin"))?;
        if self.backend == Backend::Postgres {
            // `::text`: the Any driver reads no `void` column.
            sqlx::query("SELECT pg_advisory_xact_lock($1)::text")
                .bind(POSTGRES_WRITE_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(db("write lock"))?;
        }
        Ok(tx)
    }

    /// Creates the tables if missing and brings older databases up to date.
    async fn prepare(self) -> Result<SqlStore, StoreError> {
        if self.backend == Backend::Postgres {
            for stmt in POSTGRES_SETUP {
                sqlx::query(*stmt)
                    .execute(&self.pool)
                    .await
                    .map_err(db("schema"))?;
            }
        }
        for stmt in SCHEMA.iter().chain(crate::registro::SCHEMA) {
            sqlx::query(sqlx::AssertSqlSafe(schema_statement(self.backend, stmt)))
                .execute(&self.pool)
                .await
                .map_err(db("schema"))?;
        }
        migrate_outbox_lease(&self)
            .await
            .map_err(db("outbox migration"))?;
        // Digest §11: a log written before the hash chain gets its columns and links.
        crate::registro::migrate(&self)
            .await
            .map_err(db("log migration"))?;
        Ok(self)
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> Result<DateTime<Utc>, StoreError> {
    Utc.timestamp_millis_opt(v)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("time {v}")))
}

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn parse_list(s: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("list {s:?}: {e}")))
}

impl SqlStore {
    /// Opens (creating if needed) the SQLite database file at `path`.
    pub async fn open(path: &Path) -> Result<SqlStore, StoreError> {
        let url = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .to_url_lossy();
        let opts = AnyConnectOptions::from_url(&url).map_err(db("open"))?;
        let pool = Self::connect(Backend::Sqlite, opts, false).await?;
        Self::with_pool(Backend::Sqlite, pool).prepare().await
    }

    /// Opens an existing SQLite database read-only, for a process that only looks (the
    /// conformance runner reading a `pec-gestore serve` child's mailboxes while the child writes).
    /// WAL lets a reader see committed rows without blocking the writer; the busy timeout covers
    /// checkpoints.
    pub async fn open_read_only(path: &Path) -> Result<SqlStore, StoreError> {
        let url = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .to_url_lossy();
        let opts = AnyConnectOptions::from_url(&url).map_err(db("open read-only"))?;
        let pool = Self::connect(Backend::Sqlite, opts, true)
            .await
            .map_err(|e| match e {
                StoreError::Db { source, .. } => StoreError::Db {
                    op: "open read-only",
                    source,
                },
                e => e,
            })?;
        Ok(Self::with_pool(Backend::Sqlite, pool))
    }

    /// An in-memory SQLite database (tests of the store itself).
    pub async fn memory() -> Result<SqlStore, StoreError> {
        let opts: AnyConnectOptions = "sqlite::memory:".parse().map_err(db("open"))?;
        let pool = Self::connect(Backend::Sqlite, opts, false).await?;
        Self::with_pool(Backend::Sqlite, pool).prepare().await
    }

    /// Opens (creating the tables if needed) the PostgreSQL database at `url`
    /// (`postgres://user@host:port/db`; the database must exist).
    pub async fn open_postgres(url: &str) -> Result<SqlStore, StoreError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Config(format!(
                "`{url}` is not a postgres:// URL"
            )));
        }
        let opts: AnyConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Config(format!("`{url}`: {e}")))?;
        let pool = Self::connect(Backend::Postgres, opts, false).await?;
        Self::with_pool(Backend::Postgres, pool).prepare().await
    }

    /// Opens the store a config names (`store: { sqlite: PATH }` or `{ postgres: URL }`); a SQLite
    /// file's folder is created if missing.
    pub async fn open_config(c: &StoreConfig) -> Result<SqlStore, StoreError> {
        match &c.postgres {
            Some(url) => Self::open_postgres(url).await,
            None => {
                if let Some(dir) = c.sqlite.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Config(format!("creating {}: {e}", dir.display()))
                    })?;
                }
                Self::open(&c.sqlite).await
            }
        }
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

impl SqlStore {
    /// The connection pool (the message log's own queries, registro.rs).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Claims the `\Recent` messages of a folder for one IMAP session (RFC 3501 §2.3.2): returns
    /// the highest UID an earlier session claimed (0: none) and raises the mark to `up_to`, so
    /// the messages above the old mark are recent for this session only. `up_to` 0 only reads.
    pub async fn claim_recent(
        &self,
        mailbox: &str,
        folder: &str,
        uidvalidity: u32,
        up_to: i64,
    ) -> Result<i64, StoreError> {
        let folder = canonical_folder(folder);
        let mut tx = self.begin().await?;
        let prev: i64 = sqlx::query(
            "SELECT last_uid FROM imap_recent WHERE mailbox = $1 AND folder = $2 AND uidvalidity = $3",
        )
        .bind(mailbox)
        .bind(&folder)
        .bind(i64::from(uidvalidity))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("read recent"))?
        .map_or(0, |r| r.get(0));
        if up_to > prev {
            sqlx::query(
                "INSERT INTO imap_recent (mailbox, folder, uidvalidity, last_uid) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (mailbox, folder, uidvalidity) DO UPDATE SET last_uid = excluded.last_uid",
            )
            .bind(mailbox)
            .bind(&folder)
            .bind(i64::from(uidvalidity))
            .bind(up_to)
            .execute(&mut *tx)
            .await
            .map_err(db("claim recent"))?;
        }
        tx.commit().await.map_err(db("commit"))?;
        Ok(prev)
    }

    /// Wakes every [`Store::changes`] receiver.
    fn changed(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }
}

impl Store for SqlStore {
    async fn commit(&self, batch: Batch) -> Result<CommitOutcome, StoreError> {
        let at = ms(batch.at);
        let mut tx = self.begin().await?;
        let mut delivered = false;
        for op in batch.ops {
            match op {
                Op::Seen { message_id } => {
                    let r = sqlx::query(
                        "INSERT INTO seen (message_id, at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    )
                    .bind(&message_id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("seen"))?;
                    if r.rows_affected() == 0 {
                        tx.rollback().await.map_err(db("rollback"))?;
                        return Ok(CommitOutcome::Duplicate);
                    }
                }
                Op::Deliver {
                    mailbox,
                    folder,
                    raw,
                    kind,
                    message_id,
                } => {
                    // INBOX and Sent exist implicitly (RFC 3501 §5.1: INBOX always exists).
                    let folder = canonical_folder(&folder);
                    let next = take_uid(&mut tx, &mailbox, &folder, at).await?;
                    delivered = true;
                    sqlx::query(
                        "INSERT INTO mailbox_messages
                         (mailbox, folder, uid, kind, message_id, raw, size, internal_date)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(&mailbox)
                    .bind(&folder)
                    .bind(next)
                    .bind(&kind)
                    .bind(&message_id)
                    .bind(&raw)
                    .bind(raw.len() as i64)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("deliver"))?;
                }
                Op::Transaction {
                    identificativo,
                    sender,
                    client_msgid,
                    subject,
                    tipo_ricevuta,
                    recipients,
                    daticert,
                } => {
                    sqlx::query(
                        "INSERT INTO transactions
                         (identificativo, sender, client_msgid, subject, tipo_ricevuta, accepted_at,
                          daticert)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&identificativo)
                    .bind(&sender)
                    .bind(&client_msgid)
                    .bind(&subject)
                    .bind(&tipo_ricevuta)
                    .bind(at)
                    .bind(&daticert)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("transaction"))?;
                    for (address, tipo) in recipients {
                        sqlx::query(
                            "INSERT INTO recipients
                             (identificativo, address, tipo, state, updated_at)
                             VALUES ($1, $2, $3, 'inviato', $4) ON CONFLICT DO NOTHING",
                        )
                        .bind(&identificativo)
                        .bind(&address)
                        .bind(&tipo)
                        .bind(at)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("recipient"))?;
                    }
                }
                Op::RecipientState {
                    identificativo,
                    address,
                    state,
                } => {
                    sqlx::query(
                        "UPDATE recipients SET state = $1, updated_at = $2
                         WHERE identificativo = $3 AND address = $4",
                    )
                    .bind(&state)
                    .bind(at)
                    .bind(&identificativo)
                    .bind(&address)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("recipient state"))?;
                }
                Op::Enqueue {
                    key,
                    mail_from,
                    rcpts,
                    raw,
                } => {
                    sqlx::query(
                        "INSERT INTO outbox
                         (key, mail_from, rcpts, raw, state, next_attempt, created_at)
                         VALUES ($1, $2, $3, $4, 'pending', $5, $6) ON CONFLICT DO NOTHING",
                    )
                    .bind(&key)
                    .bind(&mail_from)
                    .bind(json_list(&rcpts))
                    .bind(&raw)
                    .bind(at)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("enqueue"))?;
                }
                Op::ArmTimer {
                    identificativo,
                    address,
                    phase,
                    due,
                } => {
                    sqlx::query(
                        "INSERT INTO timers (identificativo, address, phase, due, state)
                         VALUES ($1, $2, $3, $4, 'armed') ON CONFLICT DO NOTHING",
                    )
                    .bind(&identificativo)
                    .bind(&address)
                    .bind(&phase)
                    .bind(ms(due))
                    .execute(&mut *tx)
                    .await
                    .map_err(db("arm timer"))?;
                }
                Op::CancelTimers {
                    identificativo,
                    address,
                    phases,
                } => {
                    for phase in phases {
                        sqlx::query(
                            "UPDATE timers SET state = 'cancelled'
                             WHERE identificativo = $1 AND address = $2 AND phase = $3 AND state = 'armed'",
                        )
                        .bind(&identificativo)
                        .bind(&address)
                        .bind(&phase)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("cancel timer"))?;
                    }
                }
                Op::TimerFired {
                    identificativo,
                    address,
                    phase,
                } => {
                    sqlx::query(
                        "UPDATE timers SET state = 'fired'
                         WHERE identificativo = $1 AND address = $2 AND phase = $3",
                    )
                    .bind(&identificativo)
                    .bind(&address)
                    .bind(&phase)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("timer fired"))?;
                }
                Op::Virus {
                    point,
                    virus,
                    identificativo,
                    raw,
                } => {
                    sqlx::query(
                        "INSERT INTO virus_store (at, point, virus, identificativo, raw)
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(at)
                    .bind(&point)
                    .bind(&virus)
                    .bind(&identificativo)
                    .bind(&raw)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("virus store"))?;
                }
                Op::Log(r) => {
                    // Digest §11: chained by hash inside this same transaction (registro.rs).
                    crate::registro::append(&mut tx, at, &r)
                        .await
                        .map_err(db("log"))?;
                }
                Op::OutboxTaken { id, rcpts, reply } => {
                    let row =
                        sqlx::query("SELECT rcpts, state, lease_until FROM outbox WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(db("outbox taken"))?;
                    let Some(row) = row else {
                        return Err(StoreError::Corrupt(format!("no outbox item {id}")));
                    };
                    // RFC 5321 §4.5.4.1: a recipient the peer took is never sent again.
                    let left: Vec<String> = parse_list(row.get::<&str, _>(0))?
                        .into_iter()
                        .filter(|r| !rcpts.iter().any(|t| t.eq_ignore_ascii_case(r)))
                        .collect();
                    // Done: the lease is released; otherwise the claimer keeps it.
                    let (state, lease) = if left.is_empty() {
                        ("done".to_string(), 0)
                    } else {
                        (row.get::<String, _>(1), row.get::<i64, _>(2))
                    };
                    sqlx::query(
                        "UPDATE outbox SET rcpts = $1, state = $2, last_reply = $3, lease_until = $4
                         WHERE id = $5",
                    )
                    .bind(json_list(&left))
                    .bind(&state)
                    .bind(&reply)
                    .bind(lease)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("outbox taken"))?;
                }
            }
        }
        tx.commit().await.map_err(db("commit"))?;
        if delivered {
            self.changed();
        }
        Ok(CommitOutcome::Committed)
    }

    async fn due_outbox(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, key, mail_from, rcpts, raw, attempts FROM outbox
             WHERE state = 'pending' AND next_attempt <= $1 ORDER BY next_attempt, id LIMIT $2",
        )
        .bind(ms(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db("due outbox"))?;
        rows.into_iter()
            .map(|r| {
                Ok(OutboxItem {
                    id: r.get(0),
                    key: r.get(1),
                    mail_from: r.get(2),
                    rcpts: parse_list(r.get::<&str, _>(3))?,
                    raw: r.get(4),
                    attempts: r.get(5),
                })
            })
            .collect()
    }

    async fn outbox_done(&self, id: i64, reply: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET state = 'done', last_reply = $1, attempts = attempts + 1, lease_until = 0 WHERE id = $2")
            .bind(reply)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db("outbox done"))?;
        Ok(())
    }

    async fn outbox_retry(
        &self,
        id: i64,
        next: DateTime<Utc>,
        reply: &str,
        give_up: bool,
    ) -> Result<(), StoreError> {
        let state = if give_up { "failed" } else { "pending" };
        sqlx::query(
            "UPDATE outbox SET state = $1, next_attempt = $2, last_reply = $3, attempts = attempts + 1,
             lease_until = 0 WHERE id = $4",
        )
        .bind(state)
        .bind(ms(next))
        .bind(reply)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db("outbox retry"))?;
        Ok(())
    }

    async fn next_wakeup(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let v: Option<i64> = sqlx::query(
            "SELECT MIN(t) FROM (
               SELECT MIN(CASE WHEN lease_until > next_attempt THEN lease_until
                               ELSE next_attempt END) AS t FROM outbox WHERE state = 'pending'
               UNION ALL SELECT MIN(due) AS t FROM timers WHERE state = 'armed') AS w",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db("next wakeup"))?
        .get(0);
        v.map(from_ms).transpose()
    }

    async fn due_timers(&self, now: DateTime<Utc>) -> Result<Vec<DueTimer>, StoreError> {
        let rows = sqlx::query(
            "SELECT identificativo, address, phase, due FROM timers
             WHERE state = 'armed' AND due <= $1 ORDER BY due",
        )
        .bind(ms(now))
        .fetch_all(&self.pool)
        .await
        .map_err(db("due timers"))?;
        rows.into_iter()
            .map(|r| {
                Ok(DueTimer {
                    identificativo: r.get(0),
                    address: r.get(1),
                    phase: r.get(2),
                    due: from_ms(r.get(3))?,
                })
            })
            .collect()
    }

    async fn transaction_daticert(
        &self,
        identificativo: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT daticert FROM transactions WHERE identificativo = $1")
            .bind(identificativo)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("transaction"))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn recipients(&self, identificativo: &str) -> Result<Vec<RecipientRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT address, tipo, state FROM recipients WHERE identificativo = $1 ORDER BY rowid",
        )
        .bind(identificativo)
        .fetch_all(&self.pool)
        .await
        .map_err(db("recipients"))?;
        Ok(rows
            .into_iter()
            .map(|r| RecipientRow {
                address: r.get(0),
                tipo: r.get(1),
                state: r.get(2),
            })
            .collect())
    }

    async fn mailbox(&self, mailbox: &str, folder: &str) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT uid, kind, message_id, internal_date, raw FROM mailbox_messages
             WHERE mailbox = $1 AND folder = $2 ORDER BY uid",
        )
        .bind(mailbox)
        .bind(folder)
        .fetch_all(&self.pool)
        .await
        .map_err(db("mailbox"))?;
        rows.into_iter()
            .map(|r| {
                Ok(StoredMessage {
                    uid: r.get(0),
                    kind: r.get(1),
                    message_id: r.get(2),
                    internal_date: from_ms(r.get(3))?,
                    raw: r.get(4),
                })
            })
            .collect()
    }

    async fn mailbox_size(&self, mailbox: &str) -> Result<i64, StoreError> {
        Ok(
            // CAST: PostgreSQL's SUM of BIGINT is NUMERIC.
            sqlx::query(
                "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM mailbox_messages
                 WHERE mailbox = $1",
            )
            .bind(mailbox)
            .fetch_one(&self.pool)
            .await
            .map_err(db("mailbox size"))?
            .get(0),
        )
    }

    async fn put_account(&self, a: &Account) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO accounts (address, password_hash, quota, disabled) VALUES ($1, $2, $3, $4)
             ON CONFLICT (address) DO UPDATE SET password_hash = excluded.password_hash,
             quota = excluded.quota, disabled = excluded.disabled",
        )
        .bind(&a.address)
        .bind(&a.password_hash)
        .bind(a.quota)
        // 0/1 on both backends (the column is INTEGER).
        .bind(i64::from(a.disabled))
        .execute(&self.pool)
        .await
        .map_err(db("put account"))?;
        let mut conn = self.pool.acquire().await.map_err(db("put account"))?;
        for f in ["INBOX", "Sent"] {
            ensure_folder(&mut conn, &a.address, f, now_ms()).await?;
        }
        Ok(())
    }

    async fn account(&self, address: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(
            "SELECT address, password_hash, quota, disabled FROM accounts WHERE address = $1",
        )
        .bind(address)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("account"))?;
        Ok(row.map(|r| Account {
            address: r.get(0),
            password_hash: r.get(1),
            quota: r.get(2),
            disabled: r.get::<i64, _>(3) != 0,
        }))
    }

    async fn folders(&self, mailbox: &str) -> Result<Vec<FolderInfo>, StoreError> {
        // ESCAPE '!': PostgreSQL's LIKE takes `\` as its escape by default, SQLite's does not.
        let rows = sqlx::query(
            "SELECT f.name, f.uidvalidity, f.uidnext,
                    (SELECT COUNT(*) FROM mailbox_messages m
                     WHERE m.mailbox = f.mailbox AND m.folder = f.name),
                    (SELECT COUNT(*) FROM mailbox_messages m
                     WHERE m.mailbox = f.mailbox AND m.folder = f.name
                       AND (' ' || m.flags || ' ') NOT LIKE '% \\Seen %' ESCAPE '!')
             FROM folders f WHERE f.mailbox = $1 ORDER BY f.name",
        )
        .bind(mailbox)
        .fetch_all(&self.pool)
        .await
        .map_err(db("folders"))?;
        Ok(rows
            .into_iter()
            .map(|r| FolderInfo {
                name: r.get(0),
                uidvalidity: r.get::<i64, _>(1) as u32,
                uidnext: r.get(2),
                messages: r.get(3),
                unseen: r.get(4),
            })
            .collect())
    }

    async fn folder(&self, mailbox: &str, name: &str) -> Result<Option<FolderInfo>, StoreError> {
        let name = canonical_folder(name);
        Ok(self
            .folders(mailbox)
            .await?
            .into_iter()
            .find(|f| f.name == name))
    }

    async fn create_folder(&self, mailbox: &str, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db("create folder"))?;
        ensure_folder(&mut conn, mailbox, &canonical_folder(name), now_ms()).await
    }

    async fn delete_folder(&self, mailbox: &str, name: &str) -> Result<bool, StoreError> {
        let name = canonical_folder(name);
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM mailbox_messages WHERE mailbox = $1 AND folder = $2")
            .bind(mailbox)
            .bind(&name)
            .execute(&mut *tx)
            .await
            .map_err(db("delete folder"))?;
        let r = sqlx::query("DELETE FROM folders WHERE mailbox = $1 AND name = $2")
            .bind(mailbox)
            .bind(&name)
            .execute(&mut *tx)
            .await
            .map_err(db("delete folder"))?;
        tx.commit().await.map_err(db("commit"))?;
        self.changed();
        Ok(r.rows_affected() == 1)
    }

    async fn rename_folder(&self, mailbox: &str, from: &str, to: &str) -> Result<bool, StoreError> {
        let (from, to) = (canonical_folder(from), canonical_folder(to));
        let mut tx = self.begin().await?;
        let names: Vec<String> = sqlx::query("SELECT name FROM folders WHERE mailbox = $1")
            .bind(mailbox)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("rename folder"))?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        if !names.contains(&from) || names.contains(&to) {
            return Ok(false);
        }
        // RFC 3501 §6.3.5: inferior hierarchical names are renamed too.
        let prefix = format!("{from}/");
        for old in names
            .iter()
            .filter(|n| **n == from || n.starts_with(&prefix))
        {
            let new = format!("{to}{}", &old[from.len()..]);
            for q in [
                "UPDATE folders SET name = $1 WHERE mailbox = $2 AND name = $3",
                "UPDATE mailbox_messages SET folder = $1 WHERE mailbox = $2 AND folder = $3",
            ] {
                sqlx::query(q)
                    .bind(&new)
                    .bind(mailbox)
                    .bind(old)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("rename folder"))?;
            }
        }
        tx.commit().await.map_err(db("commit"))?;
        self.changed();
        Ok(true)
    }

    async fn messages(&self, mailbox: &str, folder: &str) -> Result<Vec<MessageMeta>, StoreError> {
        let rows = sqlx::query(
            "SELECT uid, flags, size, internal_date FROM mailbox_messages
             WHERE mailbox = $1 AND folder = $2 ORDER BY uid",
        )
        .bind(mailbox)
        .bind(canonical_folder(folder))
        .fetch_all(&self.pool)
        .await
        .map_err(db("messages"))?;
        rows.into_iter()
            .map(|r| {
                Ok(MessageMeta {
                    uid: r.get(0),
                    flags: parse_flags(r.get::<&str, _>(1)),
                    size: r.get(2),
                    internal_date: from_ms(r.get(3))?,
                })
            })
            .collect()
    }

    async fn message_raw(
        &self,
        mailbox: &str,
        folder: &str,
        uid: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query(
            "SELECT raw FROM mailbox_messages WHERE mailbox = $1 AND folder = $2 AND uid = $3",
        )
        .bind(mailbox)
        .bind(canonical_folder(folder))
        .bind(uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("message"))?
        .map(|r| r.get(0)))
    }

    async fn set_flags(
        &self,
        mailbox: &str,
        folder: &str,
        uid: i64,
        flags: &[String],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE mailbox_messages SET flags = $1 WHERE mailbox = $2 AND folder = $3 AND uid = $4",
        )
        .bind(flags_text(flags))
        .bind(mailbox)
        .bind(canonical_folder(folder))
        .bind(uid)
        .execute(&self.pool)
        .await
        .map_err(db("set flags"))?;
        self.changed();
        Ok(())
    }

    async fn delete_messages(
        &self,
        mailbox: &str,
        folder: &str,
        uids: &[i64],
    ) -> Result<u64, StoreError> {
        let folder = canonical_folder(folder);
        let mut tx = self.begin().await?;
        let mut n = 0;
        for uid in uids {
            n += sqlx::query(
                "DELETE FROM mailbox_messages WHERE mailbox = $1 AND folder = $2 AND uid = $3",
            )
            .bind(mailbox)
            .bind(&folder)
            .bind(uid)
            .execute(&mut *tx)
            .await
            .map_err(db("delete messages"))?
            .rows_affected();
        }
        tx.commit().await.map_err(db("commit"))?;
        self.changed();
        Ok(n)
    }

    async fn copy_messages(
        &self,
        mailbox: &str,
        from: &str,
        uids: &[i64],
        to: &str,
    ) -> Result<Vec<i64>, StoreError> {
        self.transfer(mailbox, from, uids, to, false).await
    }

    async fn append(
        &self,
        mailbox: &str,
        folder: &str,
        raw: &[u8],
        flags: &[String],
        internal_date: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let folder = canonical_folder(folder);
        let mut tx = self.begin().await?;
        let uid = take_uid(&mut tx, mailbox, &folder, now_ms()).await?;
        sqlx::query(
            "INSERT INTO mailbox_messages
             (mailbox, folder, uid, kind, message_id, raw, size, internal_date, flags)
             VALUES ($1, $2, $3, 'appended', NULL, $4, $5, $6, $7)",
        )
        .bind(mailbox)
        .bind(&folder)
        .bind(uid)
        .bind(raw)
        .bind(raw.len() as i64)
        .bind(ms(internal_date))
        .bind(flags_text(flags))
        .execute(&mut *tx)
        .await
        .map_err(db("append"))?;
        tx.commit().await.map_err(db("commit"))?;
        self.changed();
        Ok(uid)
    }

    async fn delete_mailbox(&self, address: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for q in [
            "DELETE FROM mailbox_messages WHERE mailbox = $1",
            "DELETE FROM folders WHERE mailbox = $1",
            "DELETE FROM accounts WHERE address = $1",
        ] {
            sqlx::query(q)
                .bind(address)
                .execute(&mut *tx)
                .await
                .map_err(db("delete mailbox"))?;
        }
        tx.commit().await.map_err(db("commit"))?;
        self.changed();
        Ok(())
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn log(&self) -> Result<Vec<LogRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT event, msgid, sender, recipients, subject, related, provider FROM log ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("log"))?;
        rows.into_iter()
            .map(|r| {
                Ok(LogRecord {
                    event: r.get(0),
                    msgid: r.get(1),
                    sender: r.get(2),
                    recipients: parse_list(r.get::<&str, _>(3))?,
                    subject: r.get(4),
                    related: parse_list(r.get::<&str, _>(5))?,
                    provider: r.get(6),
                })
            })
            .collect()
    }

    async fn outbox_retry_rcpts(
        &self,
        id: i64,
        rcpts: &[String],
        next: DateTime<Utc>,
        reply: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET state = 'pending', rcpts = $1, next_attempt = $2, last_reply = $3,
             attempts = attempts + 1, lease_until = 0 WHERE id = $4",
        )
        .bind(json_list(rcpts))
        .bind(ms(next))
        .bind(reply)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db("outbox retry recipients"))?;
        Ok(())
    }

    async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        until: DateTime<Utc>,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        // One statement: the due rows are chosen and leased atomically (backend section).
        let rows = sqlx::query(claim_outbox_statement(self.backend))
            .bind(ms(until))
            .bind(ms(now))
            .bind(ms(now))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db("claim outbox"))?;
        let mut items = rows
            .into_iter()
            .map(|r| {
                Ok((
                    r.get::<i64, _>(6),
                    OutboxItem {
                        id: r.get(0),
                        key: r.get(1),
                        mail_from: r.get(2),
                        rcpts: parse_list(r.get::<&str, _>(3))?,
                        raw: r.get(4),
                        attempts: r.get(5),
                    },
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // RETURNING follows no ORDER BY: oldest first again.
        items.sort_by_key(|(next, item)| (*next, item.id));
        Ok(items.into_iter().map(|(_, item)| item).collect())
    }

    async fn release_outbox_leases(&self) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("UPDATE outbox SET lease_until = 0 WHERE lease_until <> 0")
                .execute(&self.pool)
                .await
                .map_err(db("release outbox leases"))?
                .rows_affected(),
        )
    }

    async fn move_messages(
        &self,
        mailbox: &str,
        from: &str,
        uids: &[i64],
        to: &str,
    ) -> Result<Vec<i64>, StoreError> {
        self.transfer(mailbox, from, uids, to, true).await
    }
}

impl SqlStore {
    /// COPY (RFC 3501 §6.4.7), or with `remove` MOVE (RFC 6851 §3.3: the copy and the expunge are
    /// one transaction; an error rolls both back). Returns the new UIDs of the messages found, in
    /// order; a UID not in `from` is skipped.
    async fn transfer(
        &self,
        mailbox: &str,
        from: &str,
        uids: &[i64],
        to: &str,
        remove: bool,
    ) -> Result<Vec<i64>, StoreError> {
        let what = if remove { "move" } else { "copy" };
        let (from, to) = (canonical_folder(from), canonical_folder(to));
        let mut tx = self.begin().await?;
        let mut out = Vec::new();
        for uid in uids {
            let new = take_uid(&mut tx, mailbox, &to, now_ms()).await?;
            let r = sqlx::query(
                "INSERT INTO mailbox_messages
                 (mailbox, folder, uid, kind, message_id, raw, size, internal_date, flags)
                 SELECT mailbox, $1, $2, kind, message_id, raw, size, internal_date, flags
                 FROM mailbox_messages WHERE mailbox = $3 AND folder = $4 AND uid = $5",
            )
            .bind(&to)
            .bind(new)
            .bind(mailbox)
            .bind(&from)
            .bind(uid)
            .execute(&mut *tx)
            .await
            .map_err(db(what))?;
            if r.rows_affected() == 0 {
                continue;
            }
            if remove {
                sqlx::query(
                    "DELETE FROM mailbox_messages WHERE mailbox = $1 AND folder = $2 AND uid = $3",
                )
                .bind(mailbox)
                .bind(&from)
                .bind(uid)
                .execute(&mut *tx)
                .await
                .map_err(db(what))?;
            }
            out.push(new);
        }
        tx.commit().await.map_err(db("commit"))?;
        self.changed();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    /// Each scenario runs on an in-memory SQLite store (one test each, `on_sqlite::`) and, in one
    /// test that starts a real PostgreSQL 15 on loopback, on a database of its own there.
    macro_rules! scenarios {
        ($($name:ident),* $(,)?) => {
            mod on_sqlite {
                $(
                    #[tokio::test]
                    async fn $name() {
                        super::$name(super::SqlStore::memory().await.unwrap()).await
                    }
                )*
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn every_scenario_passes_on_postgres() {
                let dir = tempfile::tempdir().unwrap();
                let started = std::time::Instant::now();
                let pg = crate::pgcluster::PgCluster::start(dir.path()).unwrap();
                eprintln!("PostgreSQL test cluster up in {:?}", started.elapsed());
                $(
                    let url = pg.create_database(stringify!($name)).await.unwrap();
                    let s = SqlStore::open_postgres(&url).await.unwrap();
                    assert_eq!(s.backend(), Backend::Postgres);
                    $name(s).await;
                )*
                eprintln!("store scenarios on PostgreSQL: {:?}", started.elapsed());
            }
        };
    }

    scenarios!(
        accounts_are_found_case_insensitively_and_replaced,
        a_batch_is_all_or_nothing_and_seen_ids_deduplicate,
        recent_is_claimed_once_per_folder_incarnation,
        folders_keep_uids_unique_and_uidvalidity_fresh,
        enqueue_is_idempotent_and_retry_moves_the_due_time,
        timers_fire_when_due_and_cancelled_ones_do_not,
        concurrent_batches_commit_once_and_keep_the_log_chained,
        recipients_keep_their_order_and_mailbox_size_sums,
        concurrent_claimers_get_disjoint_items_until_the_lease_ends,
        a_taken_transaction_and_its_log_record_commit_together,
        a_move_is_one_transaction,
    );

    /// Enqueues `n` items due at `t0()`, keys `k0`.., recipients `r@x` and `s@y`.
    async fn enqueue(s: &SqlStore, n: usize) {
        let mut b = Batch::new(t0());
        for i in 0..n {
            b.push(Op::Enqueue {
                key: format!("k{i}"),
                mail_from: "p@a".into(),
                rcpts: vec!["r@x".into(), "s@y".into()],
                raw: b"m".to_vec(),
            });
        }
        s.commit(b).await.unwrap();
    }

    /// Two workers on one database never get the same item: concurrent claims are disjoint and
    /// cover every due item; a leased item is claimed again only after its lease ends, or once
    /// done/retry released it.
    async fn concurrent_claimers_get_disjoint_items_until_the_lease_ends(s: SqlStore) {
        enqueue(&s, 20).await;
        let lease = t0() + Duration::minutes(5);
        let mut claimers = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let s = s.clone();
            claimers.spawn(async move { s.claim_outbox(t0(), 8, lease).await.unwrap() });
        }
        let mut ids: Vec<i64> = claimers
            .join_all()
            .await
            .into_iter()
            .flatten()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids.len(), 20, "{ids:?}");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 20, "an item was claimed twice");
        let later = t0() + Duration::minutes(4);
        assert!(s.claim_outbox(later, 100, later).await.unwrap().is_empty());
        // The worker sleeps until the lease ends, not in a busy loop on a due but leased item.
        assert_eq!(s.next_wakeup().await.unwrap(), Some(lease));
        // The claimer died: after the lease the items are due again, oldest first.
        let t5 = lease;
        let again = s
            .claim_outbox(t5, 100, t5 + Duration::minutes(5))
            .await
            .unwrap();
        assert_eq!(again.iter().map(|i| i.id).collect::<Vec<_>>(), ids);
        assert_eq!(again[0].rcpts, ["r@x", "s@y"]);
        // done and retry release the lease.
        let t6 = t0() + Duration::minutes(6);
        s.outbox_done(ids[0], "250 ok").await.unwrap();
        s.outbox_retry(ids[1], t6, "421 busy", false).await.unwrap();
        s.outbox_retry_rcpts(ids[2], &["s@y".into()], t6, "451 later")
            .await
            .unwrap();
        let due = s.claim_outbox(t6, 100, t6).await.unwrap();
        assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), ids[1..3]);
        assert_eq!(due[1].rcpts, ["s@y"]);
        // A restart of the one SQLite writer frees every lease at once.
        assert_eq!(s.release_outbox_leases().await.unwrap(), 19);
        assert_eq!(s.claim_outbox(t6, 100, t6).await.unwrap().len(), 19);
    }

    /// The hand-over's `invio` record and the removal of the recipients the peer took are one
    /// transaction: a batch that fails writes neither; a recipient taken is never offered again,
    /// and with none left the item is done.
    async fn a_taken_transaction_and_its_log_record_commit_together(s: SqlStore) {
        enqueue(&s, 1).await;
        let item = s
            .claim_outbox(t0(), 10, t0() + Duration::minutes(5))
            .await
            .unwrap();
        let id = item[0].id;
        let invio = |rcpt: &str| {
            Op::Log(LogRecord {
                event: "invio".into(),
                msgid: "id1@a".into(),
                sender: "p@a".into(),
                recipients: vec![rcpt.into()],
                subject: "s".into(),
                related: vec![],
                provider: "A".into(),
            })
        };
        let taken = |id: i64, rcpt: &str| Op::OutboxTaken {
            id,
            rcpts: vec![rcpt.into()],
            reply: "250 queued".into(),
        };
        let mut broken = Batch::new(t0());
        broken.push(invio("r@x")).push(taken(id + 1000, "r@x"));
        assert!(s.commit(broken).await.is_err(), "no such outbox item");
        assert!(
            s.log().await.unwrap().is_empty(),
            "the record went back too"
        );
        let mut b = Batch::new(t0());
        b.push(invio("r@x")).push(taken(id, "R@x"));
        s.commit(b).await.unwrap();
        assert_eq!(s.log().await.unwrap().len(), 1);
        let left = s.due_outbox(t0(), 10).await.unwrap();
        assert_eq!(left[0].rcpts, ["s@y"]);
        assert_eq!(left[0].attempts, 0);
        // Still leased by the claimer that sent it.
        assert!(s.claim_outbox(t0(), 10, t0()).await.unwrap().is_empty());
        let mut b = Batch::new(t0());
        b.push(invio("s@y")).push(taken(id, "s@y"));
        s.commit(b).await.unwrap();
        assert!(
            s.due_outbox(t0() + Duration::days(1), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(s.next_wakeup().await.unwrap(), None);
        assert_eq!(s.log().await.unwrap().len(), 2);
    }

    /// RFC 6851 §3.3: MOVE copies (flags kept) and expunges in one transaction; when the expunge
    /// fails (here a trigger refuses it) nothing was copied either.
    async fn a_move_is_one_transaction(s: SqlStore) {
        let mut b = Batch::new(t0());
        for n in 1..=3 {
            b.push(Op::Deliver {
                mailbox: "alice@a".into(),
                folder: "INBOX".into(),
                raw: format!("Subject: {n}\r\n\r\nb\r\n").into_bytes(),
                kind: "ordinary".into(),
                message_id: None,
            });
        }
        s.commit(b).await.unwrap();
        assert!(s.create_folder("alice@a", "Archivio").await.unwrap());
        s.set_flags("alice@a", "INBOX", 2, &["\\Seen".into()])
            .await
            .unwrap();
        let moved = s
            .move_messages("ALICE@a", "inbox", &[2, 1, 99], "Archivio")
            .await
            .unwrap();
        assert_eq!(moved, [1, 2]);
        let uids = |v: Vec<MessageMeta>| v.into_iter().map(|m| m.uid).collect::<Vec<_>>();
        assert_eq!(uids(s.messages("alice@a", "INBOX").await.unwrap()), [3]);
        let arch = s.messages("alice@a", "Archivio").await.unwrap();
        assert_eq!(arch[0].flags, ["\\Seen"]);
        assert_eq!(
            s.message_raw("alice@a", "Archivio", 2)
                .await
                .unwrap()
                .unwrap(),
            b"Subject: 1\r\n\r\nb\r\n"
        );
        let refuse: &[&str] = match s.backend() {
            Backend::Sqlite => &["CREATE TRIGGER keep3 BEFORE DELETE ON mailbox_messages
                 WHEN old.uid = 3 BEGIN SELECT RAISE(ABORT, 'refused'); END"],
            Backend::Postgres => &[
                "CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql
                 AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$",
                "CREATE TRIGGER keep3 BEFORE DELETE ON mailbox_messages FOR EACH ROW
                 WHEN (OLD.uid = 3) EXECUTE FUNCTION refuse_delete()",
            ],
        };
        let before = s.folder("alice@a", "Archivio").await.unwrap().unwrap();
        for q in refuse {
            sqlx::raw_sql(*q).execute(s.pool()).await.unwrap();
        }
        assert!(
            s.move_messages("alice@a", "INBOX", &[3], "Archivio")
                .await
                .is_err()
        );
        assert_eq!(uids(s.messages("alice@a", "INBOX").await.unwrap()), [3]);
        assert_eq!(
            uids(s.messages("alice@a", "Archivio").await.unwrap()),
            [1, 2]
        );
        let after = s.folder("alice@a", "Archivio").await.unwrap().unwrap();
        assert_eq!(after, before, "the UID taken for the copy went back too");
    }

    /// The durable path under concurrency: the same inbound message committed by many tasks at
    /// once is stored once (dedupe key `seen`), its receipt queued once (`outbox.key`); distinct
    /// messages to one folder get distinct UIDs and the log stays one hash chain (digest §11).
    async fn concurrent_batches_commit_once_and_keep_the_log_chained(s: SqlStore) {
        let batch = |n: usize, id: &str| {
            let mut b = Batch::new(t0());
            b.push(Op::Seen {
                message_id: id.to_string(),
            })
            .push(Op::Deliver {
                mailbox: "bob@b".into(),
                folder: "INBOX".into(),
                raw: format!("Subject: {n}\r\n\r\nbody\r\n").into_bytes(),
                kind: "ordinary".into(),
                message_id: Some(id.to_string()),
            })
            .push(Op::Enqueue {
                key: format!("consegna:{id}"),
                mail_from: "p@b".into(),
                rcpts: vec!["alice@a".into()],
                raw: b"r".to_vec(),
            })
            .push(Op::Log(LogRecord {
                event: "ricezione".into(),
                msgid: id.to_string(),
                sender: "alice@a".into(),
                recipients: vec!["bob@b".into()],
                subject: n.to_string(),
                related: vec![],
                provider: "B".into(),
            }));
            b
        };
        let mut same = tokio::task::JoinSet::new();
        for n in 0..8 {
            let (s, b) = (s.clone(), batch(n, "<same@a>"));
            same.spawn(async move { s.commit(b).await.unwrap() });
        }
        let outcomes = same.join_all().await;
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == CommitOutcome::Committed)
                .count(),
            1,
            "{outcomes:?}"
        );
        let mut distinct = tokio::task::JoinSet::new();
        for n in 0..8 {
            let (s, b) = (s.clone(), batch(n, &format!("<m{n}@a>")));
            distinct.spawn(async move { s.commit(b).await.unwrap() });
        }
        assert!(
            distinct
                .join_all()
                .await
                .iter()
                .all(|o| *o == CommitOutcome::Committed)
        );
        let uids: Vec<i64> = s
            .mailbox("bob@b", "INBOX")
            .await
            .unwrap()
            .iter()
            .map(|m| m.uid)
            .collect();
        assert_eq!(uids, (1..=9).collect::<Vec<_>>());
        assert_eq!(s.due_outbox(t0(), 100).await.unwrap().len(), 9);
        let rows = crate::registro::records_after(&s, 0).await.unwrap();
        assert_eq!(rows.len(), 9);
        assert_eq!(crate::registro::check_chain(&rows), None);
    }

    /// Recipients come back in the order the transaction listed them (not sorted), and the quota
    /// sum is a plain integer on both backends.
    async fn recipients_keep_their_order_and_mailbox_size_sums(s: SqlStore) {
        let mut b = Batch::new(t0());
        b.push(Op::Transaction {
            identificativo: "id1".into(),
            sender: "alice@a".into(),
            client_msgid: None,
            subject: "s".into(),
            tipo_ricevuta: "completa".into(),
            recipients: vec![
                ("zed@b".into(), "certificato".into()),
                ("amy@b".into(), "esterno".into()),
            ],
            daticert: "<postacert/>".into(),
        })
        .push(Op::RecipientState {
            identificativo: "id1".into(),
            address: "ZED@b".into(),
            state: "consegnato".into(),
        });
        for raw in [&b"12345"[..], &b"678"[..]] {
            b.push(Op::Deliver {
                mailbox: "amy@b".into(),
                folder: "INBOX".into(),
                raw: raw.to_vec(),
                kind: "ordinary".into(),
                message_id: None,
            });
        }
        s.commit(b).await.unwrap();
        let r = s.recipients("id1").await.unwrap();
        let got: Vec<(&str, &str)> = r
            .iter()
            .map(|r| (r.address.as_str(), r.state.as_str()))
            .collect();
        assert_eq!(got, [("zed@b", "consegnato"), ("amy@b", "inviato")]);
        assert_eq!(s.mailbox_size("AMY@b").await.unwrap(), 8);
        assert_eq!(
            s.transaction_daticert("id1").await.unwrap().as_deref(),
            Some("<postacert/>")
        );
        assert_eq!(s.mailbox("amy@b", "INBOX").await.unwrap()[1].raw, b"678");
    }

    async fn accounts_are_found_case_insensitively_and_replaced(s: SqlStore) {
        let mut a = Account {
            address: "Alice@pec.a.test".into(),
            password_hash: "h1".into(),
            quota: 100,
            disabled: false,
        };
        s.put_account(&a).await.unwrap();
        a.password_hash = "h2".into();
        a.disabled = true;
        s.put_account(&a).await.unwrap();
        let got = s.account("alice@PEC.A.TEST").await.unwrap().unwrap();
        assert_eq!(got, a);
        assert!(s.account("bob@pec.a.test").await.unwrap().is_none());
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 30, 0, 30, 0)
            .single()
            .unwrap()
    }

    async fn a_batch_is_all_or_nothing_and_seen_ids_deduplicate(s: SqlStore) {
        let mut b = Batch::new(t0());
        b.push(Op::Seen {
            message_id: "<r1@x>".into(),
        })
        .push(Op::Deliver {
            mailbox: "Alice@pec.a.test".into(),
            folder: "INBOX".into(),
            raw: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
            kind: "accettazione".into(),
            message_id: Some("<r1@x>".into()),
        })
        .push(Op::Enqueue {
            key: "k1".into(),
            mail_from: "a@x".into(),
            rcpts: vec!["b@y".into()],
            raw: b"m".to_vec(),
        });
        assert_eq!(s.commit(b.clone()).await.unwrap(), CommitOutcome::Committed);
        // The same inbound message again: nothing is written a second time.
        assert_eq!(s.commit(b).await.unwrap(), CommitOutcome::Duplicate);
        let inbox = s.mailbox("alice@PEC.A.TEST", "INBOX").await.unwrap();
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0].uid, 1);
        assert_eq!(inbox[0].internal_date, t0());
        assert_eq!(s.due_outbox(t0(), 10).await.unwrap().len(), 1);
    }

    async fn recent_is_claimed_once_per_folder_incarnation(s: SqlStore) {
        // RFC 3501 §2.3.2: the first claim gets what is above the old mark; reading claims nothing.
        assert_eq!(s.claim_recent("a@x", "inbox", 7, 0).await.unwrap(), 0);
        assert_eq!(s.claim_recent("a@x", "INBOX", 7, 3).await.unwrap(), 0);
        assert_eq!(s.claim_recent("A@x", "INBOX", 7, 0).await.unwrap(), 3);
        // The mark never goes down.
        assert_eq!(s.claim_recent("a@x", "INBOX", 7, 2).await.unwrap(), 3);
        assert_eq!(s.claim_recent("a@x", "INBOX", 7, 5).await.unwrap(), 3);
        assert_eq!(s.claim_recent("a@x", "INBOX", 7, 0).await.unwrap(), 5);
        // Another folder, or the same name with a new UIDVALIDITY, starts over.
        assert_eq!(s.claim_recent("a@x", "Sent", 7, 0).await.unwrap(), 0);
        assert_eq!(s.claim_recent("a@x", "INBOX", 8, 0).await.unwrap(), 0);
    }

    async fn folders_keep_uids_unique_and_uidvalidity_fresh(s: SqlStore) {
        s.put_account(&Account {
            address: "alice@a".into(),
            password_hash: "h".into(),
            quota: 100,
            disabled: false,
        })
        .await
        .unwrap();
        let names = |v: Vec<FolderInfo>| v.into_iter().map(|f| f.name).collect::<Vec<_>>();
        assert_eq!(
            names(s.folders("ALICE@a").await.unwrap()),
            ["INBOX", "Sent"]
        );
        let changes = s.changes();
        let mut b = Batch::new(t0());
        for _ in 0..2 {
            b.push(Op::Deliver {
                mailbox: "alice@a".into(),
                folder: "inbox".into(),
                raw: b"Subject: x\r\n\r\nb\r\n".to_vec(),
                kind: "ordinary".into(),
                message_id: None,
            });
        }
        s.commit(b).await.unwrap();
        assert!(changes.has_changed().unwrap(), "a delivery wakes IDLE");
        s.set_flags("alice@a", "INBOX", 2, &["\\Seen".into()])
            .await
            .unwrap();
        let inbox = s.folder("alice@a", "Inbox").await.unwrap().unwrap();
        assert_eq!((inbox.messages, inbox.unseen, inbox.uidnext), (2, 1, 3));
        // RFC 3501 §2.3.1.1: an expunged UID is never given again.
        assert_eq!(
            s.delete_messages("alice@a", "INBOX", &[2]).await.unwrap(),
            1
        );
        let uid = s.append("alice@a", "INBOX", b"x", &[], t0()).await.unwrap();
        assert_eq!(uid, 3);
        assert!(s.create_folder("alice@a", "A").await.unwrap());
        assert!(!s.create_folder("alice@a", "A").await.unwrap());
        assert!(s.create_folder("alice@a", "A/B").await.unwrap());
        assert_eq!(
            s.copy_messages("alice@a", "INBOX", &[1, 3, 99], "A/B")
                .await
                .unwrap(),
            vec![1, 2]
        );
        let v1 = s.folder("alice@a", "A").await.unwrap().unwrap().uidvalidity;
        assert!(s.rename_folder("alice@a", "A", "C").await.unwrap());
        assert!(!s.rename_folder("alice@a", "A", "D").await.unwrap());
        assert_eq!(
            names(s.folders("alice@a").await.unwrap()),
            ["C", "C/B", "INBOX", "Sent"]
        );
        assert_eq!(s.messages("alice@a", "C/B").await.unwrap().len(), 2);
        assert!(s.delete_folder("alice@a", "C").await.unwrap());
        assert!(s.create_folder("alice@a", "C").await.unwrap());
        let v2 = s.folder("alice@a", "C").await.unwrap().unwrap().uidvalidity;
        assert!(v2 > v1, "a re-created folder gets a new UIDVALIDITY");
        s.delete_mailbox("alice@a").await.unwrap();
        assert!(s.account("alice@a").await.unwrap().is_none());
        assert!(s.folders("alice@a").await.unwrap().is_empty());
        assert!(s.messages("alice@a", "C/B").await.unwrap().is_empty());
    }

    async fn enqueue_is_idempotent_and_retry_moves_the_due_time(s: SqlStore) {
        for _ in 0..2 {
            let mut b = Batch::new(t0());
            b.push(Op::Enqueue {
                key: "consegna:id1:bob@b".into(),
                mail_from: "p@a".into(),
                rcpts: vec!["alice@a".into()],
                raw: b"r".to_vec(),
            });
            s.commit(b).await.unwrap();
        }
        let due = s.due_outbox(t0(), 10).await.unwrap();
        assert_eq!(due.len(), 1);
        s.outbox_retry(due[0].id, t0() + Duration::minutes(5), "421 busy", false)
            .await
            .unwrap();
        assert!(s.due_outbox(t0(), 10).await.unwrap().is_empty());
        assert_eq!(
            s.next_wakeup().await.unwrap(),
            Some(t0() + Duration::minutes(5))
        );
        let again = s.due_outbox(t0() + Duration::minutes(5), 10).await.unwrap();
        assert_eq!(again[0].attempts, 1);
        s.outbox_done(again[0].id, "250 ok").await.unwrap();
        assert_eq!(s.next_wakeup().await.unwrap(), None);
    }

    async fn timers_fire_when_due_and_cancelled_ones_do_not(s: SqlStore) {
        let mut b = Batch::new(t0());
        for (addr, phase, h) in [
            ("b1@b", "12h", 12),
            ("b1@b", "24h", 24),
            ("b2@b", "12h", 12),
            ("b2@b", "24h", 24),
        ] {
            b.push(Op::ArmTimer {
                identificativo: "id1".into(),
                address: addr.into(),
                phase: phase.into(),
                due: t0() + Duration::hours(h),
            });
        }
        s.commit(b).await.unwrap();
        let mut c = Batch::new(t0() + Duration::hours(1));
        c.push(Op::CancelTimers {
            identificativo: "id1".into(),
            address: "B2@b".into(),
            phases: vec!["12h".into(), "24h".into()],
        });
        s.commit(c).await.unwrap();
        assert!(
            s.due_timers(t0() + Duration::hours(11))
                .await
                .unwrap()
                .is_empty()
        );
        let due = s.due_timers(t0() + Duration::hours(12)).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].address.as_str(), due[0].phase.as_str()),
            ("b1@b", "12h")
        );
    }

    #[tokio::test]
    async fn a_file_store_keeps_what_was_committed_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gestore.db");
        {
            let s = SqliteStore::open(&path).await.unwrap();
            let mut b = Batch::new(t0());
            b.push(Op::Log(LogRecord {
                event: "accettazione".into(),
                msgid: "id1@a".into(),
                sender: "alice@a".into(),
                recipients: vec!["bob@b".into()],
                subject: "Contratto".into(),
                related: vec!["acc1@a".into()],
                provider: "A".into(),
            }));
            s.commit(b).await.unwrap();
        }
        let s = SqliteStore::open(&path).await.unwrap();
        let log = s.log().await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].recipients, vec!["bob@b".to_string()]);
    }

    #[tokio::test]
    async fn a_read_only_store_sees_what_the_writer_commits_and_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gestore.db");
        let w = SqliteStore::open(&path).await.unwrap();
        let r = SqliteStore::open_read_only(&path).await.unwrap();
        assert!(r.mailbox("bob@b", "INBOX").await.unwrap().is_empty());
        let mut b = Batch::new(t0());
        b.push(Op::Deliver {
            mailbox: "bob@b".into(),
            folder: "INBOX".into(),
            raw: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
            kind: "ordinary".into(),
            message_id: None,
        });
        w.commit(b).await.unwrap();
        let got = r.mailbox("bob@b", "INBOX").await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, "ordinary");
        let refused = r
            .put_account(&Account {
                address: "eve@b".into(),
                password_hash: "h".into(),
                quota: 1,
                disabled: false,
            })
            .await;
        assert!(refused.is_err());
        // A missing file is an error, not a new empty store.
        assert!(
            SqliteStore::open_read_only(&dir.path().join("absent.db"))
                .await
                .is_err()
        );
    }
}
