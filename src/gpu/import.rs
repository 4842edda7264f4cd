//! Importing slab pages into a Vulkan device with
//! `VK_EXT_external_memory_host`, through wgpu-hal. All the Vulkan calls of
//! psyne are here.

use std::ffi::CStr;
use std::sync::Arc;

use ash::vk;

use crate::error::{Error, Result};
use crate::shm::region::Memory;

type Hal = wgpu::hal::api::Vulkan;

const EXT_HOST: &CStr = ash::ext::external_memory_host::NAME;
const KHR_EXTERNAL: &CStr = ash::khr::external_memory::NAME;

/// What the import needs from the device: its function tables, the
/// extension's one function, the import alignment and the memory types.
pub(crate) struct HostImporter {
    device: ash::Device,
    ext: ash::ext::external_memory_host::Device,
    /// `minImportedHostPointerAlignment`.
    pub(crate) alignment: u64,
    memory_types: Vec<vk::MemoryPropertyFlags>,
}

/// Opens `adapter` through wgpu-hal with the host-memory import extensions
/// enabled. `Err` carries why zero-copy is unavailable (the caller then
/// opens the device the ordinary way).
pub(crate) fn open_with_host_import(
    adapter: &wgpu::Adapter,
    limits: &wgpu::Limits,
    desc: &wgpu::DeviceDescriptor<'_>,
) -> std::result::Result<(wgpu::Device, wgpu::Queue, HostImporter), String> {
    // SAFETY: the guard is used only within this function, while `adapter`
    // lives, and nothing here destroys the hal adapter.
    let hal_adapter = unsafe { adapter.as_hal::<Hal>() }
        .ok_or_else(|| "the adapter is not a Vulkan adapter".to_string())?;
    let caps = hal_adapter.physical_device_capabilities();
    if !caps.supports_extension(EXT_HOST) {
        return Err("the driver lacks VK_EXT_external_memory_host".into());
    }
    // The queries below are Vulkan 1.1 entry points, and the buffer import
    // needs external memory, core in 1.1.
    let v11 = vk::make_api_version(0, 1, 1, 0);
    let inst_version = hal_adapter.shared_instance().instance_api_version();
    let dev_version = caps.properties().api_version;
    if inst_version < v11 || dev_version < v11 {
        return Err(format!(
            "host-memory import needs Vulkan 1.1 (instance {}.{}, device {}.{})",
            vk::api_version_major(inst_version),
            vk::api_version_minor(inst_version),
            vk::api_version_major(dev_version),
            vk::api_version_minor(dev_version)
        ));
    }
    let need_khr = caps.supports_extension(KHR_EXTERNAL);
    let callback = move |args: wgpu::hal::vulkan::CreateDeviceCallbackArgs<'_, '_, '_>| {
        for name in [EXT_HOST, KHR_EXTERNAL] {
            if (name != KHR_EXTERNAL || need_khr) && !args.extensions.contains(&name) {
                args.extensions.push(name);
            }
        }
    };
    // SAFETY: the callback only adds extensions the adapter offers (checked
    // above) and removes nothing; features and limits are the adapter's own.
    let open = unsafe {
        hal_adapter.open_with_callback(
            desc.required_features,
            limits,
            &desc.memory_hints,
            Some(Box::new(callback)),
        )
    }
    .map_err(|e| format!("opening the device with the import extension failed: {e}"))?;

    let instance = hal_adapter.shared_instance().raw_instance().clone();
    let phd = hal_adapter.raw_physical_device();
    // Can a buffer with our usages be bound to imported host memory, without
    // a dedicated allocation?
    let ext_info = vk::PhysicalDeviceExternalBufferInfo::default()
        .usage(BUFFER_USAGE)
        .handle_type(vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT);
    let mut ext_props = vk::ExternalBufferProperties::default();
    // SAFETY: a Vulkan 1.1 instance (checked above) and its physical device;
    // valid input and output structures.
    unsafe {
        instance.get_physical_device_external_buffer_properties(phd, &ext_info, &mut ext_props)
    };
    let feats = ext_props
        .external_memory_properties
        .external_memory_features;
    if !feats.contains(vk::ExternalMemoryFeatureFlags::IMPORTABLE)
        || feats.contains(vk::ExternalMemoryFeatureFlags::DEDICATED_ONLY)
    {
        return Err(format!(
            "the driver cannot bind storage buffers to imported host memory ({feats:?})"
        ));
    }
    let mut host_props = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
    let mut props2 = vk::PhysicalDeviceProperties2::default().push_next(&mut host_props);
    // SAFETY: `phd` is the adapter's physical device of this live instance,
    // and the extension's property struct is valid because the device
    // supports the extension.
    unsafe { instance.get_physical_device_properties2(phd, &mut props2) };
    let alignment = host_props.min_imported_host_pointer_alignment.max(1);
    // SAFETY: as above.
    let mem_props = unsafe { instance.get_physical_device_memory_properties(phd) };
    let memory_types = mem_props
        .memory_types_as_slice()
        .iter()
        .map(|t| t.property_flags)
        .collect();
    drop(hal_adapter);

    // SAFETY: `open` was created from this adapter's hal adapter, and the
    // descriptor asks for the same features and limits it was opened with.
    let (device, queue) = unsafe { adapter.create_device_from_hal::<Hal>(open, desc) }
        .map_err(|e| format!("wgpu refused the device opened through wgpu-hal: {e}"))?;

    // The ash::Device we clone out of the guard is a table of function
    // pointers plus the VkDevice handle, which stays valid while `device`
    // (held beside the importer by GpuContext, and by its buffers) lives.
    // SAFETY: the guard lives only for this statement; nothing is destroyed.
    let raw = unsafe { device.as_hal::<Hal>() }
        .ok_or_else(|| "wgpu did not return the Vulkan device".to_string())?
        .raw_device()
        .clone();
    let ext = ash::ext::external_memory_host::Device::new(&instance, &raw);
    Ok((
        device,
        queue,
        HostImporter {
            device: raw,
            ext,
            alignment,
            memory_types,
        },
    ))
}

/// The Vulkan usages of a buffer of imported pages (matching [`IMPORT_USAGE`]).
const BUFFER_USAGE: vk::BufferUsageFlags = vk::BufferUsageFlags::from_raw(
    vk::BufferUsageFlags::STORAGE_BUFFER.as_raw()
        | vk::BufferUsageFlags::TRANSFER_SRC.as_raw()
        | vk::BufferUsageFlags::TRANSFER_DST.as_raw(),
);

/// What a buffer of imported pages must be usable for.
pub(crate) const IMPORT_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl HostImporter {
    /// A command buffer holding one barrier that makes shader and transfer
    /// writes of everything submitted before it available to the host.
    /// Vulkan requires it before the CPU reads device writes to host memory
    /// (waiting for the fence alone is not enough); wgpu adds it only for
    /// its own mappable buffers, not for imported pages.
    pub(crate) fn host_read_barrier(&self, device: &wgpu::Device) -> Option<wgpu::CommandBuffer> {
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("psyne host-read barrier"),
        });
        let barrier = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::SHADER_WRITE | vk::AccessFlags::TRANSFER_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ);
        // The callback records one barrier into the encoder's open command
        // buffer and neither ends nor destroys it. This encoder is used only
        // through the raw API (wgpu-core forbids mixing the two in one
        // encoder) and is then finished.
        // SAFETY: as above; the ash device is the one the encoder belongs to.
        let recorded = unsafe {
            enc.as_hal_mut::<Hal, _, _>(|e| {
                let e = e?;
                let cmd = e.raw_handle();
                self.device.cmd_pipeline_barrier(
                    cmd,
                    vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER,
                    vk::PipelineStageFlags::HOST,
                    vk::DependencyFlags::empty(),
                    &[barrier],
                    &[],
                    &[],
                );
                Some(())
            })
        };
        recorded.map(|()| enc.finish())
    }

    /// Imports `len` bytes of `mem`'s data mapping from `offset` as one wgpu
    /// buffer. The address and `len` must be multiples of
    /// [`Self::alignment`] and the range must lie inside the mapping
    /// (checked: an error otherwise). The buffer keeps `mem` mapped until the
    /// driver has destroyed the import.
    pub(crate) fn import(
        &self,
        device: &wgpu::Device,
        mem: &Arc<Memory>,
        offset: u64,
        len: u64,
    ) -> Result<wgpu::Buffer> {
        let map_len = mem.data.len() as u64;
        let addr = (mem.data.base() as u64).wrapping_add(offset);
        if len == 0
            || addr % self.alignment != 0
            || len % self.alignment != 0
            || offset.checked_add(len).is_none_or(|end| end > map_len)
        {
            return Err(Error::Gpu(format!(
                "cannot import {len} bytes at {offset} of a {map_len}-byte mapping \
                 (alignment {})",
                self.alignment
            )));
        }
        let fail =
            |what: &str, r: vk::Result| Error::Gpu(format!("host-memory import: {what}: {r}"));
        // A receiver maps the data read-only, and some drivers (NVIDIA's)
        // refuse to import pages they cannot pin writable: those pages are
        // imported through a writable alias of the same file range, which
        // only the device sees (its bindings of received slots are
        // read-only). The alias starts at a 4 KiB page boundary, so with an
        // import alignment above 4 KiB its pointer may fail the check below:
        // those pages are then staged.
        let alias = match mem.writable_alias(offset as usize, len as usize) {
            Some(m) => Some(m?),
            None => None,
        };
        let ptr = match &alias {
            Some((a, lead)) => a.ptr::<u8>(*lead),
            None => mem.data.ptr::<u8>(offset as usize),
        }
        .cast::<std::ffi::c_void>();
        if (ptr as u64) % self.alignment != 0 {
            return Err(Error::Gpu(format!(
                "cannot import pages at {ptr:p}: the import needs {}-byte alignment",
                self.alignment
            )));
        }
        let handle_type = vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT;

        let mut ptr_props = vk::MemoryHostPointerPropertiesEXT::default();
        // `ptr`: `len` mapped bytes (checked above) of `mem`'s data mapping
        // or of `alias`, both alive until the import is destroyed.
        // SAFETY: as just said; the function is the extension's, loaded for
        // this device.
        let r = unsafe {
            (self.ext.fp().get_memory_host_pointer_properties_ext)(
                self.device.handle(),
                handle_type,
                ptr,
                &mut ptr_props,
            )
        };
        if r != vk::Result::SUCCESS {
            return Err(fail("vkGetMemoryHostPointerPropertiesEXT", r));
        }

        let mut ext_info = vk::ExternalMemoryBufferCreateInfo::default().handle_types(handle_type);
        let buf_info = vk::BufferCreateInfo::default()
            .size(len)
            .usage(BUFFER_USAGE)
            .sharing_mode(vk::SharingMode::EXCLUSIVE)
            .push_next(&mut ext_info);
        // SAFETY: a valid create info for this device.
        let buffer = unsafe { self.device.create_buffer(&buf_info, None) }
            .map_err(|r| fail("vkCreateBuffer", r))?;
        let destroy_buffer = || {
            // SAFETY: `buffer` was created above, is bound to nothing in use,
            // and is destroyed once.
            unsafe { self.device.destroy_buffer(buffer, None) }
        };
        // SAFETY: `buffer` is a live buffer of this device.
        let reqs = unsafe { self.device.get_buffer_memory_requirements(buffer) };
        let type_bits = reqs.memory_type_bits & ptr_props.memory_type_bits;
        let wanted = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        let Some(type_index) = (0..self.memory_types.len() as u32)
            .find(|&i| type_bits & (1 << i) != 0 && self.memory_types[i as usize].contains(wanted))
        else {
            destroy_buffer();
            return Err(Error::Gpu(
                "host-memory import: no host-coherent memory type can hold these pages".into(),
            ));
        };
        if reqs.size > len {
            destroy_buffer();
            return Err(Error::Gpu(format!(
                "host-memory import: the buffer needs {} bytes aligned to {}, \
                 the pages give {len}",
                reqs.size, reqs.alignment
            )));
        }
        let mut import = vk::ImportMemoryHostPointerInfoEXT::default()
            .handle_type(handle_type)
            .host_pointer(ptr);
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(len)
            .memory_type_index(type_index)
            .push_next(&mut import);
        // The host pointer and size are multiples of
        // minImportedHostPointerAlignment (the size and offset checked on
        // entry, the pointer after choosing the mapping); the pages stay
        // mapped while the import lives (the drop callback below holds `mem`
        // and the alias).
        // SAFETY: as above; the memory type is one reported for this pointer.
        let memory = match unsafe { self.device.allocate_memory(&alloc, None) } {
            Ok(m) => m,
            Err(r) => {
                destroy_buffer();
                return Err(fail("vkAllocateMemory (import)", r));
            }
        };
        // SAFETY: both were created above from this device; the memory is as
        // large as the buffer needs (checked) and of a type it accepts.
        if let Err(r) = unsafe { self.device.bind_buffer_memory(buffer, memory, 0) } {
            destroy_buffer();
            // SAFETY: the memory was allocated above and is bound to nothing.
            unsafe { self.device.free_memory(memory, None) };
            return Err(fail("vkBindBufferMemory", r));
        }

        let dev = self.device.clone();
        let keep = (mem.clone(), alias);
        let on_drop: wgpu::hal::DropCallback = Box::new(move || {
            // wgpu-hal calls this once, when the buffer is destroyed, i.e. no
            // longer used by any submission. The device outlives its buffers
            // (wgpu-core holds it while a buffer lives).
            // SAFETY: as above; buffer and memory are ours, destroyed only here.
            unsafe {
                dev.destroy_buffer(buffer, None);
                dev.free_memory(memory, None);
            }
            // Only now may the pages (and their alias) be unmapped.
            drop(keep);
        });
        // SAFETY: `buffer` is a valid, bound buffer of this device; wgpu-hal
        // will not destroy it itself, the callback does.
        let hal_buffer =
            unsafe { wgpu::hal::vulkan::Buffer::from_raw_externally_owned(buffer, on_drop) };
        let desc = wgpu::BufferDescriptor {
            label: Some("psyne imported slab pages"),
            size: len,
            usage: IMPORT_USAGE,
            mapped_at_creation: false,
        };
        // SAFETY: the hal buffer was created from this device's VkDevice
        // with the usages `desc` names, has memory bound (so its contents are
        // initialized: they are the slab's bytes), and is not empty.
        Ok(unsafe { device.create_buffer_from_hal::<Hal>(hal_buffer, &desc) })
    }
}
