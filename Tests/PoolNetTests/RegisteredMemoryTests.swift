import PoolCore
import Testing
import TestSupport
@testable import PoolNet
#if canImport(Glibc)
import Glibc
#endif

/// Lunasa's registered memory: eager buffers registered once, a caller's
/// buffers registered at their first large transfer and reused, and data
/// objects that go to a node's pool in one transfer.
@Suite(.serialized) struct RegisteredMemoryTests {
    private func fill(_ buffer: UnsafeMutableRawBufferPointer, seed: Int) {
        for (index, byte) in pattern(buffer.count, seed: seed).enumerated() { buffer[index] = byte }
    }

    @Test func eagerAndLazyObjectsGoToTheNodeInOneTransferAndComeBack() throws {
        let served = try ServedPool()
        let remote = try connect(served)
        defer { remote.close() }
        let run = try remote.allocatePages(count: 128)
        for (index, memory) in [DataObject.Memory.eager, .lazy].enumerated() {
            let object = try remote.makeObject(metadataBytes: 24, dataBytes: 200_000, memory: memory)
            #expect(object.memory == memory)
            fill(object.metadata, seed: index)
            fill(object.data, seed: index + 10)
            fill(object.localHeader, seed: 99)
            let at = run.advanced(by: UInt64(index) * 256 << 10)
            try remote.send(object, to: at)
            let back = try remote.receiveObject(at: at, memory: memory)
            #expect(back.metadataBytes == 24 && back.dataBytes == 200_000)
            #expect(Array(back.metadata) == pattern(24, seed: index))
            #expect(Array(back.data) == pattern(200_000, seed: index + 10))
            // The local header stays here: the node's bytes start with the header's magic.
            let sent = try remote.read(at: at, count: 8)
            #expect(sent == withUnsafeBytes(of: DataObject.magic.littleEndian) { Array($0) })
        }
        // Not an object's header: refused, one line.
        let error = netError { _ = try remote.receiveObject(at: run.advanced(by: 100 << 10)) }
        #expect(error?.description.contains("no data object's header") == true)
    }

    @Test func aCallersBufferIsRegisteredOnceAndReused() throws {
        let served = try ServedPool()
        let remote = try connect(served)
        defer { remote.close() }
        let run = try remote.allocatePages(count: 64)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 10, alignment: 4096)
        defer {
            remote.unregister(UnsafeRawBufferPointer(buffer))
            buffer.deallocate()
        }
        fill(buffer, seed: 3)
        let before = remote.registrationCounts
        for _ in 0..<5 { try remote.write(at: run, from: UnsafeRawBufferPointer(buffer)) }
        for _ in 0..<5 { try remote.read(at: run, into: buffer) }
        var after = remote.registrationCounts
        #expect(after.registrations - before.registrations == 1)
        #expect(after.reuses - before.reuses == 9)
        #expect(Array(buffer) == pattern(256 << 10, seed: 3))
        // Small transfers go with their message: nothing registered.
        var small = [UInt8](repeating: 0, count: 4096)
        try small.withUnsafeMutableBytes { try remote.read(at: run, into: $0) }
        #expect(remote.registrationCounts.registrations == after.registrations)
        // Per transfer: a registration each time.
        remote.registrationMode = .perTransfer
        for _ in 0..<3 { try remote.read(at: run, into: buffer) }
        #expect(remote.registrationCounts.registrations - after.registrations == 3)
        after = remote.registrationCounts
        // A user object: the caller's memory, header written into it, one transfer.
        remote.registrationMode = .cached
        let object = try UserObject(wrapping: buffer, metadataBytes: 16)
        fill(object.data, seed: 4)
        try remote.send(object, to: run)
        let back = try remote.receiveObject(at: run)
        #expect(back.metadataBytes == 16 && back.dataBytes == (256 << 10) - 48)
        #expect(Array(back.data) == pattern((256 << 10) - 48, seed: 4))
        let tooSmall = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<40])
        #expect(throws: NetError.self) { _ = try UserObject(wrapping: tooSmall, metadataBytes: 16) }
    }
}
