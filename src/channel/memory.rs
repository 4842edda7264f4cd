//! `memory://name`: a channel between threads of this process. Same layout
//! and code as `ipc://`, in an anonymous (heap) segment found by name in a
//! process-wide registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::shared::{Config, Joined, Shared, Side};
use super::uri::Params;
use crate::error::Result;
use crate::shm::segment::area;
use crate::shm::{CreateOptions, Segment};

fn registry() -> &'static Mutex<HashMap<String, Arc<Shared>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<Shared>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Opens (creating if needed) the in-process channel `name` and joins it
/// as `side`, under the registry lock so that a concurrent `leave` cannot
/// forget the channel in between.
pub(crate) fn open(name: &str, params: &Params, side: Side) -> Result<(Arc<Shared>, Joined)> {
    let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
    let shared = match reg.get(name) {
        Some(s) => {
            s.config.check(name, params)?;
            s.clone()
        }
        None => {
            let config = Config::from_params(params);
            let opts = CreateOptions::new(config.slab_config()?)
                .control_area(area::CHANNEL, config.area_size());
            let s = Arc::new(Shared::format(Segment::anonymous_with(&opts)?, config)?);
            reg.insert(name.to_string(), s.clone());
            s
        }
    };
    let joined = shared.join(side)?;
    Ok((shared, joined))
}

/// Leaves the channel; forgets it once it is unused (no endpoint, nothing
/// queued), so the name can be made anew.
pub(crate) fn leave(name: &str, shared: &Arc<Shared>, side: Side, joined: Joined) {
    let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
    if shared.leave(side, joined) && reg.get(name).is_some_and(|s| Arc::ptr_eq(s, shared)) {
        reg.remove(name);
    }
}
