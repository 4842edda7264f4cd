//! `ipc://name`: a channel in a named shared-memory segment. The first
//! endpoint to open the name creates the segment with the URI's parameters;
//! later ones attach and must not ask for different ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shared::{Config, Shared};
use super::uri::Params;
use crate::error::{Error, Result};
use crate::shm::segment::area;
use crate::shm::{CreateOptions, DataAccess, Segment};

/// How long an opener waits for a creator that is still formatting.
const CREATOR_GRACE: Duration = Duration::from_secs(2);

/// Opens (creating if needed) the channel `name`. Returns whether this call
/// created it.
pub(crate) fn open(name: &str, params: &Params, access: DataAccess) -> Result<(Arc<Shared>, bool)> {
    let config = Config::from_params(params);
    let deadline = Instant::now() + CREATOR_GRACE;
    loop {
        let opts = CreateOptions::new(config.slab_config()?)
            .control_area(area::CHANNEL, config.area_size());
        let attempt = match Segment::create_with(name, &opts) {
            Ok(seg) => return Ok((Arc::new(Shared::format(seg, config)?), true)),
            Err(Error::AlreadyExists { .. }) => Segment::open_with(name, access)
                .and_then(Shared::attach)
                .and_then(|s| {
                    s.config.check(name, params)?;
                    Ok(s)
                }),
            Err(e) => return Err(e),
        };
        match attempt {
            Ok(shared) => return Ok((Arc::new(shared), false)),
            // The creator is between creating and formatting, or the last
            // user just removed the name: try again.
            Err(Error::Uninitialized { .. } | Error::NotFound { .. })
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Removes the name once the channel is unused (best effort: someone may
/// have removed it already).
pub(crate) fn remove(name: &str) {
    let _ = Segment::unlink(name);
}
