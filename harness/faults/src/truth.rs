//! Comparing the daemon's database with a HubSpot simulator's truth.

use std::collections::HashMap;
use std::time::Duration;

use crmsyncd::store::Store;
use crmsyncd_sim::hubspot::HubSpotSim;

const COMPARED: &[&str] = &["email", "firstname", "lastname"];

/// Ok when every live simulator contact is stored with the same properties and modified time, and every archived
/// one is absent or marked deleted; otherwise the first difference.
pub async fn converged(sim: &HubSpotSim, store: &Store, connection: &str) -> Result<(), String> {
    let local = store
        .records(connection, "contacts")
        .await
        .map_err(|e| format!("reading the store: {e}"))?;
    let local: HashMap<String, _> = local.into_iter().map(|r| (r.remote_id.clone(), r)).collect();
    for record in sim.records("contacts") {
        match local.get(&record.id) {
            None if record.archived => {}
            None => return Err(format!("contact {} missing locally", record.id)),
            Some(row) if record.archived => {
                if !row.deleted {
                    return Err(format!(
                        "contact {} archived in the CRM but not deleted locally",
                        record.id
                    ));
                }
            }
            Some(row) => {
                if row.deleted || row.remote_updated_at.timestamp_millis() != record.updated_at.timestamp_millis() {
                    return Err(format!(
                        "contact {}: local deleted={} at {} vs CRM at {}",
                        record.id, row.deleted, row.remote_updated_at, record.updated_at
                    ));
                }
                for p in COMPARED {
                    if row.data.get(*p) != record.properties.get(*p) {
                        return Err(format!("contact {} property {p} differs", record.id));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Waits until [`converged`] holds; the time it took, or the last difference after `timeout`.
pub async fn wait_converged(
    sim: &HubSpotSim,
    store: &Store,
    connection: &str,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = tokio::time::Instant::now();
    loop {
        match converged(sim, store, connection).await {
            Ok(()) => return Ok(started.elapsed()),
            Err(e) if started.elapsed() > timeout => {
                return Err(format!("{connection} not converged after {timeout:?}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
