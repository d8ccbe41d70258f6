//! What this machine's disk allows: the ceilings the broker's figures are
//! set beside.

use std::time::{Duration, Instant};

/// Single-insert durable redb commits per second on this disk.
pub fn redb_single_commits(path: &std::path::Path, n: u64) -> anyhow::Result<f64> {
    const T: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("t");
    let db = redb::Database::create(path)?;
    let start = Instant::now();
    for i in 0..n {
        let tx = db.begin_write()?;
        tx.open_table(T)?.insert(i, i)?;
        tx.commit()?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Median time to make one small record durable on this disk: 1 KiB (a
/// lone create's journal record is 0.8–2.4 KiB) written into a file
/// preallocated with zeros, then fdatasync — the appliance journal's case.
pub fn fdatasync_latency(path: &std::path::Path, n: usize) -> anyhow::Result<Duration> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    file.write_all_at(&vec![0; n * 4096], 0)?;
    file.sync_all()?;
    let record = [0x5a_u8; 1024];
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        file.write_all_at(&record, (i * 4096) as u64)?;
        file.sync_data()?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[n / 2])
}
