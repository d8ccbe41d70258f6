//! What each worker runs, as it last said (its handlers, its commands and
//! their parameters): kept so that the agent card names the skills the
//! site's workers offer, across restarts of the appliance.

use serde::{Deserialize, Serialize};

use super::Error;
use tether_base::clock::Timestamp;
use tether_base::ids::WorkerId;
use tether_store::{Collection, Order, ReadTx, WriteTx};
use tether_wire::Offers;

/// Keyed by worker id. The offers as JSON text (their schemas are free-form).
const OFFERS: Collection<Stored> = Collection::new("worker_offers");

/// The most a worker's offers may take, as JSON.
pub const MAX_OFFERS_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    json: String,
    at: Timestamp,
}

pub(super) fn put(tx: &mut WriteTx<'_>, now: Timestamp, worker: WorkerId, offers: &Offers) -> Result<(), Error> {
    let json = serde_json::to_string(offers).map_err(|e| Error::InvalidTask(e.to_string()))?;
    if json.len() > MAX_OFFERS_BYTES {
        return Err(Error::InvalidTask(format!("a worker's offers take at most {MAX_OFFERS_BYTES} bytes")));
    }
    Ok(tx.put(OFFERS, &worker.to_key(), &Stored { json, at: now })?)
}

/// Every worker's offers, and when it made them.
pub(super) fn all(tx: &ReadTx) -> Result<Vec<(WorkerId, Offers, Timestamp)>, Error> {
    let mut out = Vec::new();
    tx.scan(OFFERS, None, Order::Ascending, |key, stored: Stored| {
        let (Ok(key), Ok(offers)) = (<[u8; 16]>::try_from(key), serde_json::from_str(&stored.json)) else {
            return Ok(true);
        };
        out.push((WorkerId::from_key(key), offers, stored.at));
        Ok(true)
    })?;
    Ok(out)
}
