//! Adapter choice and device creation.

use std::fmt;
use std::sync::Mutex;

use super::bind::ImportCache;
use super::import::HostImporter;
use super::kernels::Kernels;
use crate::error::{Error, Result};

/// How to open a [`GpuContext`].
#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// Use the first adapter whose name contains this text (case-insensitive).
    pub adapter: Option<String>,
    /// Import slab pages for zero-copy binding where the driver allows it.
    /// When false every binding is [`Route::Staged`](super::Route::Staged).
    pub zero_copy: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            adapter: None,
            zero_copy: true,
        }
    }
}

impl GpuOptions {
    /// The defaults, overridden by `PSYNE_GPU_ADAPTER` (adapter name
    /// substring) and `PSYNE_GPU_ZERO_COPY=0` (never import).
    pub fn from_env() -> Self {
        GpuOptions {
            adapter: std::env::var("PSYNE_GPU_ADAPTER")
                .ok()
                .filter(|s| !s.is_empty()),
            zero_copy: std::env::var("PSYNE_GPU_ZERO_COPY").map_or(true, |v| v != "0"),
        }
    }
}

/// What a [`GpuContext`] found.
#[derive(Clone, Debug)]
pub struct GpuInfo {
    /// Adapter name as the driver reports it (e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub name: String,
    /// Driver name and version.
    pub driver: String,
    /// The graphics API in use.
    pub backend: wgpu::Backend,
    /// Discrete, integrated, virtual, CPU or other.
    pub device_type: wgpu::DeviceType,
    /// Whether slab pages are imported (`VK_EXT_external_memory_host`).
    pub zero_copy: bool,
    /// Why zero-copy is off, when it is.
    pub zero_copy_reason: Option<String>,
    /// Required alignment of an imported host pointer and size (bytes).
    pub import_alignment: u64,
    /// The largest storage-buffer binding (bytes): the largest tensor a
    /// kernel can take.
    pub max_binding: u64,
    /// Required alignment of a binding offset.
    pub offset_alignment: u64,
}

impl fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?}, {:?}, driver {}), zero-copy: ",
            self.name, self.backend, self.device_type, self.driver
        )?;
        match (&self.zero_copy, &self.zero_copy_reason) {
            (true, _) => write!(
                f,
                "yes (import alignment {} B, largest binding {} MiB)",
                self.import_alignment,
                self.max_binding >> 20
            ),
            (false, Some(why)) => write!(f, "no ({why})"),
            (false, None) => write!(f, "no"),
        }
    }
}

/// An open GPU device, the kernels compiled for it, and the pages imported
/// into it. Create one per process and share it (`Send + Sync`).
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: GpuInfo,
    pub(crate) importer: Option<HostImporter>,
    pub(crate) imports: Mutex<ImportCache>,
    pub(crate) kernels: Kernels,
    /// Largest buffer the device accepts (bytes).
    pub(crate) max_buffer: u64,
    // Kept for the context's lifetime. (The device outlives the imports'
    // drop callbacks whatever the field order: wgpu's buffers hold their
    // device.)
    _adapter: wgpu::Adapter,
    _instance: wgpu::Instance,
}

impl fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuContext")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn backend_rank(b: wgpu::Backend) -> u8 {
    match b {
        wgpu::Backend::Vulkan => 0,
        wgpu::Backend::Metal | wgpu::Backend::Dx12 => 1,
        _ => 2,
    }
}

impl GpuContext {
    /// Opens the adapter chosen by [`GpuOptions::from_env`].
    ///
    /// # Errors
    /// [`Error::NoGpu`] when no adapter is found or none matches
    /// `PSYNE_GPU_ADAPTER` (the message lists those found), or the device
    /// cannot be opened.
    pub fn new() -> Result<GpuContext> {
        GpuContext::with_options(&GpuOptions::from_env())
    }

    /// Opens an adapter as `opts` says.
    ///
    /// # Errors
    /// As [`GpuContext::new`].
    pub fn with_options(opts: &GpuOptions) -> Result<GpuContext> {
        let open = |backends: wgpu::Backends| {
            let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
            desc.backends = backends;
            let instance = wgpu::Instance::new(desc);
            let adapters = super::block_on(instance.enumerate_adapters(backends));
            (instance, adapters)
        };
        // OpenGL only when there is nothing native (probing EGL without a
        // display prints warnings, and GL never offers zero-copy).
        let (mut instance, mut adapters) =
            open(wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12);
        if adapters.is_empty() {
            (instance, adapters) = open(wgpu::Backends::GL);
        }
        if adapters.is_empty() {
            return Err(Error::NoGpu(
                "no adapter found (no Vulkan driver? on Debian: apt-get install \
                 mesa-vulkan-drivers libvulkan1)"
                    .into(),
            ));
        }
        adapters.sort_by_key(|a| {
            let i = a.get_info();
            (type_rank(i.device_type), backend_rank(i.backend))
        });
        let adapter = match &opts.adapter {
            None => adapters.swap_remove(0),
            Some(want) => {
                let want_lc = want.to_lowercase();
                match adapters
                    .iter()
                    .position(|a| a.get_info().name.to_lowercase().contains(&want_lc))
                {
                    Some(i) => adapters.swap_remove(i),
                    None => {
                        let found: Vec<String> = adapters
                            .iter()
                            .map(|a| {
                                let i = a.get_info();
                                format!("{} ({:?})", i.name, i.backend)
                            })
                            .collect();
                        return Err(Error::NoGpu(format!(
                            "no adapter name contains {want:?}; found: {}",
                            found.join(", ")
                        )));
                    }
                }
            }
        };
        let ainfo = adapter.get_info();
        let limits = adapter.limits();
        let dev_desc = wgpu::DeviceDescriptor {
            label: Some("psyne"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };

        let mut reason = None;
        let mut opened = None;
        if !opts.zero_copy {
            reason = Some("disabled (PSYNE_GPU_ZERO_COPY=0 or GpuOptions)".to_string());
        } else if ainfo.backend != wgpu::Backend::Vulkan {
            reason = Some(format!(
                "the {:?} backend has no host-memory import",
                ainfo.backend
            ));
        } else {
            match super::import::open_with_host_import(&adapter, &limits, &dev_desc) {
                Ok(o) => opened = Some(o),
                Err(why) => reason = Some(why),
            }
        }
        let (device, queue, importer) = match opened {
            Some((d, q, imp)) => (d, q, Some(imp)),
            None => {
                let (d, q) = super::block_on(adapter.request_device(&dev_desc))
                    .map_err(|e| Error::NoGpu(format!("cannot open {}: {e}", ainfo.name)))?;
                (d, q, None)
            }
        };
        // Validation errors are caught in error scopes around each call;
        // anything that escapes one is logged instead of panicking.
        device.on_uncaptured_error(std::sync::Arc::new(|e: wgpu::Error| {
            eprintln!("psyne: uncaptured wgpu error: {e}");
        }));
        let info = GpuInfo {
            name: ainfo.name.clone(),
            driver: format!("{} {}", ainfo.driver, ainfo.driver_info)
                .trim()
                .to_string(),
            backend: ainfo.backend,
            device_type: ainfo.device_type,
            zero_copy: importer.is_some(),
            zero_copy_reason: reason,
            import_alignment: importer.as_ref().map_or(0, |i| i.alignment),
            max_binding: limits.max_storage_buffer_binding_size,
            offset_alignment: limits.min_storage_buffer_offset_alignment as u64,
        };
        let kernels = Kernels::new(&device);
        Ok(GpuContext {
            device,
            queue,
            info,
            importer,
            imports: Mutex::new(ImportCache::default()),
            kernels,
            max_buffer: limits.max_buffer_size,
            _adapter: adapter,
            _instance: instance,
        })
    }

    /// What was found: adapter, backend, whether zero-copy is on and why not.
    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    /// The wgpu device, for work of your own on the same bindings.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Runs `f` inside a validation error scope and turns a captured error
    /// into [`Error::Gpu`].
    pub(crate) fn checked<T>(&self, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let r = f();
        let e_oom = super::block_on(oom.pop());
        let e_val = super::block_on(scope.pop());
        let v = r?;
        match e_oom.or(e_val) {
            Some(e) => Err(Error::Gpu(format!("{what}: {e}"))),
            None => Ok(v),
        }
    }

    /// Waits for everything submitted so far.
    pub(crate) fn wait_idle(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))
    }
}
