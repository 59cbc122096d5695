//! A damaged SQLite read model: telling damage from other errors, setting a damaged file
//! aside (keeping only the newest few copies) and the rebuild marker that asks the next start
//! to do so.
//!
//! Both of the server's SQLite stores are read models of the journal (the journal is never
//! pruned, and recovery replays into a store everything after its `applied_seq`, all of it
//! into an empty one): the history store (`history.sqlite`, in `bourse-api`) and the market
//! data store (`marketdata.sqlite`, [`crate::store`]). So a store SQLite says is damaged is
//! set aside for a post-mortem and a new one is rebuilt from the journal. This lives here, in
//! the lower of the two crates, so that both stores use one implementation: `bourse-api`
//! depends on this crate, not the other way round.
//!
//! When the damage is found while the server runs (a bad page in the middle of the file,
//! which SQLite notices only when a query or a write reaches it), the file cannot be set
//! aside under the open connections: the rebuild marker `<name>.rebuild` is left beside it
//! ([`write_marker`]), and the next start sets the file aside ([`take_marker`]). An operator
//! may create the marker by hand (empty will do) to have the next start rebuild the store.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Whether SQLite says the store's file is damaged (not a database, or corrupt), rather
/// than unreadable for a reason outside it (permissions, a full disk, a lock).
pub fn is_damaged(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// How many set-aside copies of a store are kept ([`set_aside`] removes older ones). A
/// post-mortem needs the latest damage and the few before it (a recurring fault tells from a
/// one-off); each copy is as large as the whole store, and a store found damaged at every
/// start under a supervisor that restarts the server used to leave a new copy each time
/// until the disk was full (which stops the journal too, when it shares that disk).
pub const SET_ASIDE_KEPT: usize = 3;
const _: () = assert!(
    SET_ASIDE_KEPT >= 1,
    "the copy just set aside is always kept"
);

/// The files of one set-aside copy: `<name>.damaged-<stamp>` and these after it (`.reason`
/// is the rebuild marker's text, [`take_marker`]).
const SET_ASIDE_FILES: [&str; 4] = ["", "-wal", "-shm", ".reason"];

/// Renames the store at `path` and its `-wal` and `-shm` files to
/// `<name>.damaged-<unix seconds>[-<n>][-wal|-shm]` (kept for a post-mortem, never read
/// again; `-<n>` when a store was already set aside in that second, so one copy never
/// replaces another, and `<n>` above every copy of that second, so the newest copy has the
/// newest name even after older ones were removed); returns the new name of the main file.
/// Then removes all but the newest [`SET_ASIDE_KEPT`] copies of this store
/// ([`prune_set_aside`]; the one just made is always kept). A copy that cannot be removed
/// is logged, not an error.
pub fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let secs = unix_secs();
    let taken = |p: &Path| SET_ASIDE_FILES.iter().any(|x| with_suffix(p, x).exists());
    // Unlistable, the first free name will do: the rename below says what is wrong.
    let first_n = set_aside_copies(path)
        .unwrap_or_default()
        .iter()
        .filter(|(s, _, _)| *s == secs)
        .map(|(_, n, _)| n.saturating_add(1))
        .max()
        .unwrap_or(0);
    let aside = (first_n..)
        .map(|n| match n {
            0 => with_suffix(path, &format!(".damaged-{secs}")),
            n => with_suffix(path, &format!(".damaged-{secs}-{n}")),
        })
        .find(|p| !taken(p))
        .expect("some name is free");
    std::fs::rename(path, &aside)?;
    for extra in ["-wal", "-shm"] {
        match std::fs::rename(with_suffix(path, extra), with_suffix(&aside, extra)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    prune_set_aside(path, &aside);
    Ok(aside)
}

/// Where a set-aside copy of the store named `store_name` stands among the others: its
/// seconds, its `-<n>` (0 without one) and its main file's name, when `file_name` is exactly
/// `<store_name>.damaged-<digits>[-<digits>]` followed by nothing, `-wal`, `-shm` or
/// `.reason`; `None` for any other name (an operator's `history.sqlite.damaged-keep` is
/// never touched).
fn set_aside_copy(store_name: &str, file_name: &str) -> Option<(u64, u64, String)> {
    let stamp_and_suffix = file_name
        .strip_prefix(store_name)?
        .strip_prefix(".damaged-")?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    SET_ASIDE_FILES.iter().find_map(|suffix| {
        let stamp = stamp_and_suffix.strip_suffix(suffix)?;
        let (secs, n) = match stamp.split_once('-') {
            Some((secs, n)) => (number(secs)?, number(n)?),
            None => (number(stamp)?, 0),
        };
        Some((secs, n, format!("{store_name}.damaged-{stamp}")))
    })
}

/// The directory `path` is in (`.` for a bare name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The set-aside copies of the store at `path` beside it ([`set_aside_copy`]), oldest first,
/// each once however many of its files are there.
fn set_aside_copies(path: &Path) -> std::io::Result<Vec<(u64, u64, String)>> {
    let Some(store_name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let mut copies = Vec::new();
    for entry in std::fs::read_dir(dir_of(path))? {
        if let Ok(name) = entry?.file_name().into_string()
            && let Some(copy) = set_aside_copy(store_name, &name)
        {
            copies.push(copy);
        }
    }
    copies.sort_unstable();
    copies.dedup();
    Ok(copies)
}

/// Removes every set-aside copy of the store at `path` (all its files, [`SET_ASIDE_FILES`])
/// but the newest [`SET_ASIDE_KEPT`]: `just_made` and the newest others, ordered by the
/// seconds in their names, then the `-<n>` (not by modification time, which a copy or a
/// restore changes). `just_made` is kept whatever its name says (a clock set back would
/// make it look oldest). Each removed copy is logged; a file that cannot be removed is
/// logged as a warning and stays, for the next set-aside to try again.
fn prune_set_aside(path: &Path, just_made: &Path) {
    let dir = dir_of(path);
    let copies = match set_aside_copies(path) {
        Ok(copies) => copies,
        Err(e) => {
            tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "could not list the data dir to remove old set-aside stores"
            );
            return;
        }
    };
    let just_made = just_made.file_name().and_then(|n| n.to_str());
    let copies: Vec<_> = copies
        .into_iter()
        .filter(|(_, _, main)| Some(main.as_str()) != just_made)
        .collect();
    let old = copies.len().saturating_sub(SET_ASIDE_KEPT - 1);
    for (_, _, main) in &copies[..old] {
        let mut removed = true;
        for suffix in SET_ASIDE_FILES {
            let file = dir.join(format!("{main}{suffix}"));
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    removed = false;
                    tracing::warn!(
                        file = %file.display(),
                        error = %e,
                        "could not remove an old set-aside store file: it stays (the next \
                         set-aside tries again)"
                    );
                }
                _ => {}
            }
        }
        if removed {
            tracing::info!(
                removed = %dir.join(main).display(),
                kept = SET_ASIDE_KEPT,
                "old set-aside store removed (only the newest are kept)"
            );
        }
    }
}

/// `p` with `suffix` appended to its file name (`history.sqlite` + `-wal`).
pub fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Now, in Unix seconds (0 before 1970): the names and notes of damaged stores.
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The marker's name beside the store: `history.sqlite` + this.
pub const MARKER_SUFFIX: &str = ".rebuild";

/// The marker that asks the next start to set the store at `db` aside and rebuild it.
pub fn marker_path(db: &Path) -> PathBuf {
    with_suffix(db, MARKER_SUFFIX)
}

/// Leaves the rebuild marker beside the store at `db` ([`marker_path`]) holding `text`
/// (why), synced with its directory entry (it must survive the crash that may follow).
pub fn write_marker(db: &Path, text: &str) -> std::io::Result<()> {
    write_durably(&marker_path(db), text.as_bytes())
}

/// Writes `bytes` to a new file at `path`, synced with its directory entry.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// What the start did with a rebuild marker ([`take_marker`]).
#[derive(Debug, PartialEq, Eq)]
pub struct MarkerTaken {
    /// Where the store was set aside (`None`: there was no store file).
    pub aside: Option<PathBuf>,
    /// The marker's text (empty when an operator made it by hand).
    pub reason: String,
}

/// At start, before the store is opened: when the rebuild marker is there, sets the store at
/// `db` aside ([`set_aside`]) with the marker beside it (`<aside>.reason`), or, when
/// there is no store file, removes the marker and any `-wal`/`-shm` left behind; the store
/// is then created anew and recovery fills it from the journal. `None` when there is no
/// marker.
pub fn take_marker(db: &Path) -> std::io::Result<Option<MarkerTaken>> {
    let marker = marker_path(db);
    let reason = match std::fs::read(&marker) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let aside = if db.exists() {
        let aside = set_aside(db)?;
        std::fs::rename(&marker, with_suffix(&aside, ".reason"))?;
        Some(aside)
    } else {
        // The store was moved away by hand, perhaps without its `-wal` and `-shm`: SQLite
        // would apply a stale log to the new, empty store, so they go too.
        for extra in ["-wal", "-shm"] {
            match std::fs::remove_file(with_suffix(db, extra)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::remove_file(&marker)?;
        None
    };
    Ok(Some(MarkerTaken { aside, reason }))
}

/// [`take_marker`] at a start, logged: a warning naming `store` ("history store", "market
/// data store"), the file, where it went and the marker's reason. True when there was a
/// marker (the store is new now).
pub fn take_marker_logged(db: &Path, store: &str) -> std::io::Result<bool> {
    let Some(taken) = take_marker(db)? else {
        return Ok(false);
    };
    tracing::warn!(
        file = %db.display(),
        moved_to = %taken.aside.as_ref().map_or("(no store file)".into(), |p| p.display().to_string()),
        marker = %marker_path(db).display(),
        reason = %taken.reason,
        "the {store} was found damaged while the server ran (or the rebuild was asked for \
         by hand): set aside, a new one is rebuilt from the journal"
    );
    Ok(true)
}

/// [`set_aside`] of the store at `db`, which SQLite found damaged at start (`why`), logged
/// as a warning naming `store`.
pub fn set_aside_logged(
    db: &Path,
    store: &str,
    why: &dyn std::fmt::Display,
) -> std::io::Result<PathBuf> {
    let aside = set_aside(db)?;
    tracing::warn!(
        file = %db.display(),
        moved_to = %aside.display(),
        error = %why,
        "the {store} is damaged: set aside, a new one is rebuilt from the journal"
    );
    Ok(aside)
}

/// Damage found while the server runs (`e`, by the `found_by`: "writer", "read"): leaves the
/// rebuild marker beside the store at `db` ([`write_marker`]) saying so, for the next start;
/// a marker that cannot be written is logged with what the operator must do instead. The
/// caller logs the damage itself (what stops differs from store to store).
pub fn leave_marker(db: &Path, store: &str, found_by: &str, e: &rusqlite::Error) {
    let text = format!(
        "SQLite reported this {store} damaged at {} (unix seconds), found by the {found_by}: \
         {e}\nThe next start sets the store aside and rebuilds it from the journal.\n",
        unix_secs()
    );
    if let Err(io) = write_marker(db, &text) {
        tracing::error!(
            marker = %marker_path(db).display(),
            error = %io,
            "could not leave the rebuild marker: move the {store}'s files away by hand before \
             the next start, or it reopens the damaged file"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store's path in `dir` (the names are the history store's, as these tests were
    /// written for it; nothing here depends on the name).
    fn db_path(dir: &Path) -> PathBuf {
        dir.join("history.sqlite")
    }

    /// The names in `dir`, sorted.
    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        names
    }

    /// Creates `history.sqlite.damaged-<stamp>` with each of `suffixes` in `dir`.
    fn plant(dir: &std::path::Path, stamp: &str, suffixes: &[&str]) {
        for suffix in suffixes {
            let f = dir.join(format!("history.sqlite.damaged-{stamp}{suffix}"));
            std::fs::write(&f, stamp).expect("plant");
        }
    }

    /// Names that are not exactly a set-aside copy's (an operator's, another store's), or
    /// whose seconds no clock gives (more than a `u64`): never touched.
    const DECOYS: [&str; 9] = [
        "history.sqlite.damaged-keep",
        "history.sqlite.damaged-",
        "history.sqlite.damaged-1.bak",
        "history.sqlite.damaged-1-2-3",
        "history.sqlite.damaged-1-",
        "history.sqlite.damaged-+1",
        "history.sqlite.damaged-99999999999999999999999",
        "history.sqlite.damaged-1-wal-shm",
        "marketdata.sqlite.damaged-1",
    ];

    /// A store set aside once more than [`SET_ASIDE_KEPT`] allows: the oldest copies
    /// go with all their files, ordered by the seconds in their names (99 before 100, though
    /// "99" sorts after "100" as text and its files are the most recently modified), then by
    /// `-<n>`; names that are not exactly a copy's stay. Copies used to pile up for ever.
    #[test]
    fn only_the_newest_set_aside_copies_are_kept() {
        use {SET_ASIDE_KEPT, set_aside};
        assert_eq!(SET_ASIDE_KEPT, 3, "the expectations below are for 3");
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_path(dir.path());
        plant(dir.path(), "100", &[""]);
        plant(dir.path(), "100-1", &["", "-wal"]);
        plant(dir.path(), "1000", &["", ".reason"]);
        plant(dir.path(), "99", &["", "-wal", "-shm", ".reason"]);
        for decoy in DECOYS {
            std::fs::write(dir.path().join(decoy), b"mine").expect("decoy");
        }
        std::fs::write(&db, b"store").expect("db");
        std::fs::write(with_suffix(&db, "-shm"), b"shm").expect("shm");
        let aside = set_aside(&db).expect("set aside");
        let aside = aside.file_name().expect("name").to_str().expect("utf-8");
        let mut expected: Vec<String> = DECOYS.iter().map(|d| d.to_string()).collect();
        expected.extend([
            aside.to_string(),
            format!("{aside}-shm"),
            "history.sqlite.damaged-100-1".into(),
            "history.sqlite.damaged-100-1-wal".into(),
            "history.sqlite.damaged-1000".into(),
            "history.sqlite.damaged-1000.reason".into(),
        ]);
        expected.sort();
        assert_eq!(names(dir.path()), expected);
    }

    /// A store damaged again and again within one second (a supervisor restarting the
    /// server at once): the copies get `-1`, `-2`, ... and only the last three made stay,
    /// each with its `-wal`.
    #[test]
    fn repeated_set_asides_keep_the_last_three() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_path(dir.path());
        let mut asides = Vec::new();
        for i in 0..6 {
            std::fs::write(&db, format!("store {i}")).expect("db");
            std::fs::write(with_suffix(&db, "-wal"), b"wal").expect("wal");
            asides.push(set_aside(&db).expect("set aside"));
        }
        let mut expected: Vec<String> = asides[3..]
            .iter()
            .flat_map(|p| {
                let name = p.file_name().expect("name").to_str().expect("utf-8");
                [name.to_string(), format!("{name}-wal")]
            })
            .collect();
        expected.sort();
        assert_eq!(names(dir.path()), expected);
        assert_eq!(std::fs::read(&asides[5]).expect("last"), b"store 5");
    }

    /// The copy just set aside stays even when older copies' names look newer (a clock set
    /// back); the newest of those fill the other places.
    #[test]
    fn the_copy_just_set_aside_is_kept_whatever_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_path(dir.path());
        for stamp in ["9000000000", "9000000001", "9000000002", "9000000002-1"] {
            plant(dir.path(), stamp, &[""]);
        }
        std::fs::write(&db, b"store").expect("db");
        let aside = set_aside(&db).expect("set aside");
        let aside = aside.file_name().expect("name").to_str().expect("utf-8");
        let mut expected = vec![
            aside.to_string(),
            "history.sqlite.damaged-9000000002".into(),
            "history.sqlite.damaged-9000000002-1".into(),
        ];
        expected.sort();
        assert_eq!(names(dir.path()), expected);
    }

    /// A file of an old copy that cannot be removed (here a directory in the place of its
    /// `-wal`) is logged as a warning and stays; the rest of that copy goes, the set-aside
    /// succeeds, and each copy removed is logged.
    #[test]
    fn a_copy_that_cannot_be_removed_does_not_fail_the_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_path(dir.path());
        plant(dir.path(), "1", &["", ".reason"]);
        let stuck = dir.path().join("history.sqlite.damaged-1-wal");
        std::fs::create_dir(&stuck).expect("dir");
        std::fs::write(stuck.join("inside"), b"x").expect("inside");
        for stamp in ["2", "3", "4"] {
            plant(dir.path(), stamp, &[""]);
        }
        std::fs::write(&db, b"store").expect("db");
        let mut aside = None;
        let text = engine::log_capture::log_of(|| aside = Some(set_aside(&db)));
        let aside = aside
            .expect("set_aside ran")
            .expect("the set-aside succeeds");
        let aside = aside.file_name().expect("name").to_str().expect("utf-8");
        let mut expected = vec![
            aside.to_string(),
            "history.sqlite.damaged-1-wal".into(),
            "history.sqlite.damaged-3".into(),
            "history.sqlite.damaged-4".into(),
        ];
        expected.sort();
        assert_eq!(names(dir.path()), expected);
        assert_eq!(text.matches(" WARN ").count(), 1, "{text}");
        assert!(text.contains("history.sqlite.damaged-1-wal"), "{text}");
        assert_eq!(text.matches(" INFO ").count(), 1, "{text}");
        assert!(text.contains("history.sqlite.damaged-2"), "{text}");
    }

    /// The marker sets the store and its `-wal` aside with the marker beside them; without a
    /// store it is only removed; without a marker nothing moves.
    #[test]
    fn the_marker_sets_the_store_aside_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_path(dir.path());
        std::fs::write(&db, b"store").expect("db");
        std::fs::write(with_suffix(&db, "-wal"), b"wal").expect("wal");
        assert_eq!(take_marker(&db).expect("no marker"), None);
        assert!(db.exists());
        std::fs::write(marker_path(&db), b"").expect("marker by hand");
        let taken = take_marker(&db).expect("taken").expect("a marker");
        let aside = taken.aside.expect("set aside");
        assert_eq!(taken.reason, "");
        assert!(!db.exists() && !marker_path(&db).exists());
        assert_eq!(std::fs::read(&aside).expect("aside"), b"store");
        assert!(with_suffix(&aside, "-wal").exists());
        assert!(with_suffix(&aside, ".reason").exists());
        std::fs::write(marker_path(&db), b"why").expect("marker");
        let taken = take_marker(&db).expect("taken").expect("a marker");
        assert_eq!(
            taken,
            MarkerTaken {
                aside: None,
                reason: "why".into()
            }
        );
        assert!(!marker_path(&db).exists());
    }

    /// A store moved away by hand without its `-wal` and `-shm`: the marker takes them too,
    /// so the new store never replays a stale log.
    #[test]
    fn a_marker_without_its_store_takes_a_stale_log_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_path(dir.path());
        std::fs::write(with_suffix(&db, "-wal"), b"wal").expect("wal");
        std::fs::write(with_suffix(&db, "-shm"), b"shm").expect("shm");
        std::fs::write(marker_path(&db), b"by hand").expect("marker");
        let taken = take_marker(&db).expect("taken").expect("a marker");
        assert_eq!(taken.aside, None);
        assert!(!with_suffix(&db, "-wal").exists());
        assert!(!with_suffix(&db, "-shm").exists());
        assert!(!marker_path(&db).exists());
    }

    /// Two stores set aside within one second both stay (the second name gets `-1`), each
    /// with its own `-wal`.
    #[test]
    fn stores_set_aside_in_one_second_keep_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_path(dir.path());
        let mut asides = Vec::new();
        for body in [b"first", b"other"] {
            std::fs::write(&db, body).expect("db");
            std::fs::write(with_suffix(&db, "-wal"), body).expect("wal");
            asides.push(set_aside(&db).expect("set aside"));
        }
        // Unless the second fell in the next second, the names share it and differ by -1.
        assert_ne!(asides[0], asides[1]);
        assert_eq!(std::fs::read(&asides[0]).expect("first"), b"first");
        assert_eq!(std::fs::read(&asides[1]).expect("second"), b"other");
        assert_eq!(
            std::fs::read(with_suffix(&asides[1], "-wal")).expect("second wal"),
            b"other"
        );
    }

    /// Rebuilds asked for at start again and again (a store damaged at every run): only the
    /// newest [`SET_ASIDE_KEPT`] copies stay, each with its `.reason`; an older copy
    /// goes with its `.reason` and `-wal`.
    #[test]
    fn markers_taken_again_and_again_keep_the_newest_copies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_path(dir.path());
        let mut asides = Vec::new();
        for i in 0..5 {
            std::fs::write(&db, format!("store {i}")).expect("db");
            std::fs::write(with_suffix(&db, "-wal"), b"wal").expect("wal");
            std::fs::write(marker_path(&db), format!("why {i}")).expect("marker");
            let taken = take_marker(&db).expect("taken").expect("a marker");
            asides.push(taken.aside.expect("set aside"));
        }
        let mut left: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .collect();
        left.sort();
        let mut expected: Vec<PathBuf> = asides[5 - SET_ASIDE_KEPT..]
            .iter()
            .flat_map(|a| [a.clone(), with_suffix(a, "-wal"), with_suffix(a, ".reason")])
            .collect();
        expected.sort();
        assert_eq!(left, expected);
        let reason = std::fs::read_to_string(with_suffix(&asides[4], ".reason")).expect("reason");
        assert_eq!(reason, "why 4");
    }
}
