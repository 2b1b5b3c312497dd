//! The network: the virtio-net device found among microvm's virtio-mmio slots, driven by
//! `virtio-drivers`, as a `smoltcp` device; and the interface with the address of the kernel
//! command line.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use core::ptr::NonNull;
use smoltcp::iface::{Config, Interface};
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};
use tls_site_shared::command_line::NetworkConfig;
use virtio_drivers::device::net::{RxBuffer, VirtIONet};
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

/// qemu's microvm puts its virtio-mmio slots here, 512 bytes each (hw/i386/microvm.c).
const VIRTIO_MMIO_BASE: usize = 0xfeb0_0000;
const VIRTIO_MMIO_SLOT: usize = 0x200;
const VIRTIO_MMIO_SLOTS: usize = 24;
/// Descriptors per virtqueue.
const QUEUE_SIZE: usize = 64;
/// A receive buffer: an Ethernet frame of the default MTU and the virtio-net header.
const FRAME_BUFFER: usize = 2048;
/// smoltcp's MTU: a whole Ethernet frame of 1500 bytes of IP.
const MTU: usize = 1514;

/// The virtio HAL over memory mapped one to one: a DMA buffer is a zeroed heap allocation whose
/// address is its physical address; nothing needs bouncing.
pub struct IdentityHal;

// SAFETY: allocations are page-aligned, zeroed and owned until `dma_dealloc`; physical equals
// virtual below 4 GiB (boot.rs), where the heap and the MMIO are.
unsafe impl Hal for IdentityHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("DMA layout");
        // SAFETY: a layout of non-zero size.
        let pointer = NonNull::new(unsafe { alloc_zeroed(layout) }).expect("out of memory for DMA");
        (pointer.as_ptr() as PhysAddr, pointer)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("DMA layout");
        // SAFETY: allocated by `dma_alloc` with this layout (the caller's promise).
        unsafe { dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("MMIO at address zero")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

pub type NetDevice = VirtIONet<IdentityHal, MmioTransport<'static>, QUEUE_SIZE>;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no virtio-net device in the virtio-mmio slots (qemu: -device virtio-net-device)")]
    NoDevice,
    #[error("the virtio-net device: {0}")]
    Driver(virtio_drivers::Error),
}

/// The first virtio-net device in microvm's slots, set up.
pub fn find_device() -> Result<NetDevice, NetError> {
    for slot in 0..VIRTIO_MMIO_SLOTS {
        let address = VIRTIO_MMIO_BASE + slot * VIRTIO_MMIO_SLOT;
        let header = NonNull::new(address as *mut VirtIOHeader).expect("not null");
        // SAFETY: microvm's slot, mapped one to one; an empty slot reads as zeroes, which the
        // transport refuses (bad magic) without writing.
        let Ok(transport) = (unsafe { MmioTransport::new(header, VIRTIO_MMIO_SLOT) }) else {
            continue;
        };
        if transport.device_type() == DeviceType::Network {
            return VirtIONet::new(transport, FRAME_BUFFER).map_err(NetError::Driver);
        }
    }
    Err(NetError::NoDevice)
}

/// The interface on `device`, with the address and gateway of `config`.
pub fn interface(
    device: &mut Nic,
    config: &NetworkConfig,
    now: smoltcp::time::Instant,
) -> Interface {
    let mac = EthernetAddress(device.device.mac_address());
    let mut interface = Interface::new(Config::new(HardwareAddress::Ethernet(mac)), device, now);
    interface.update_ip_addrs(|addresses| {
        let _ = addresses.push(IpCidr::new(config.address.into(), config.prefix));
    });
    if let Some(gateway) = config.gateway {
        let _ = interface.routes_mut().add_default_ipv4_route(gateway);
    }
    interface
}

/// The device as smoltcp sees it.
pub struct Nic {
    pub device: NetDevice,
}

impl Device for Nic {
    type RxToken<'a> = Received<'a>;
    type TxToken<'a> = Transmit<'a>;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Received<'_>, Transmit<'_>)> {
        let buffer = self.device.receive().ok()?;
        // The token for the answer shares the device with the one for the frame: each uses it
        // only when consumed, one after the other.
        let device: *mut NetDevice = &mut self.device;
        Some((
            Received {
                buffer: Some(buffer),
                device,
                _lifetime: core::marker::PhantomData,
            },
            Transmit {
                device,
                _lifetime: core::marker::PhantomData,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Transmit<'_>> {
        Some(Transmit {
            device: &mut self.device,
            _lifetime: core::marker::PhantomData,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.max_transmission_unit = MTU;
        capabilities.max_burst_size = Some(1);
        capabilities.medium = Medium::Ethernet;
        capabilities
    }
}

pub struct Received<'a> {
    buffer: Option<RxBuffer>,
    device: *mut NetDevice,
    _lifetime: core::marker::PhantomData<&'a mut NetDevice>,
}

pub struct Transmit<'a> {
    device: *mut NetDevice,
    _lifetime: core::marker::PhantomData<&'a mut NetDevice>,
}

impl smoltcp::phy::RxToken for Received<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(mut self, f: F) -> R {
        let buffer = self.buffer.take().expect("consumed once");
        let result = f(buffer.packet());
        // SAFETY: the device outlives the token ('a), and smoltcp consumes a token pair's tokens
        // one at a time, so this is the only use of the device now.
        let _ = unsafe { &mut *self.device }.recycle_rx_buffer(buffer);
        result
    }
}

impl Drop for Received<'_> {
    /// A frame smoltcp did not take still gives its buffer back to the device's queue.
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            // SAFETY: as for `consume`.
            let _ = unsafe { &mut *self.device }.recycle_rx_buffer(buffer);
        }
    }
}

impl smoltcp::phy::TxToken for Transmit<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, length: usize, f: F) -> R {
        // SAFETY: as for `Received::consume`.
        let device = unsafe { &mut *self.device };
        let mut buffer = device.new_tx_buffer(length);
        let result = f(buffer.packet_mut());
        // A frame the device refuses is lost, as on a wire; TCP sends it again.
        let _ = device.send(buffer);
        result
    }
}
