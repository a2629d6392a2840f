import CFuse
#if canImport(Glibc)
import Glibc
#endif

/// libfuse's custom I/O on /dev/fuse: the INIT handshake is amended on its
/// way (InitHandshake.swift), and a reply to a request that came through a
/// ring goes back through that ring (RingEntry.swift).
enum DeviceIO {
    static let inHeader = MemoryLayout<fuse_in_header>.size, outHeader = MemoryLayout<fuse_out_header>.size

    /// Puts itself on `se`'s device, after fuse_session_mount.
    static func install(on se: OpaquePointer, for transport: FUSETransport) -> Bool {
        var io = fuse_custom_io()
        io.read = { fd, buffer, length, userdata in
            guard let userdata else { return Glibc.read(fd, buffer, length) }
            let transport = FUSETransport.from(userdata)
            let count = transport.devicePolling.read(fd, buffer, length, session: transport.session,
                                                     ringsServe: transport.ringsServe)
            if count >= InitHandshake.inFlags2 + 4, let buffer {
                transport.handshake.sawRequest(UnsafeRawPointer(buffer), wanted: transport.wantedFlags)
            }
            return count
        }
        io.writev = { fd, vector, count, userdata in
            guard let vector else { return Glibc.writev(fd, vector, count) }
            guard let userdata else { return Glibc.writev(fd, vector, count) }
            let transport = FUSETransport.from(userdata)
            // A reply to a request that came on a ring goes back on it.
            if count >= 1, let header = vector[0].iov_base, vector[0].iov_len >= DeviceIO.outHeader,
               let entry = transport.entry(dispatching: header.loadUnaligned(as: fuse_out_header.self).unique),
               let taken = entry.answer(vector, Int(count)) {
                return taken
            }
            guard count >= 2 else { return Glibc.writev(fd, vector, count) }
            let reply = UnsafeMutableBufferPointer(mutating: UnsafeBufferPointer(start: vector, count: Int(count)))
            let granted = transport.handshake.willReply(reply) { transport.prepareRings(device: fd) }
            if granted & InitHandshake.directIOAllowMmap != 0 { transport.handler.directIOAllowsSharedMappings() }
            let written = Glibc.writev(fd, vector, count)
            if granted & InitHandshake.overIOUring != 0 {
                // The kernel has taken the INIT reply: rings may register now.
                if written > 0 { transport.startRings() } else { transport.stop() }
            }
            return written
        }
        return fuse_session_custom_io(se, &io, fuse_session_fd(se)) == 0
    }
}
