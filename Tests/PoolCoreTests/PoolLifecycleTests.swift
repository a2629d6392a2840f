import Testing
import TestSupport
@testable import PoolCore

@Suite struct PoolLifecycleTests {
    @Test func createOpenCloseDestroy() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "life", size: 16 << 20, pageSize: 64 << 10, at: scratch.path)
        let info = pool.info()
        #expect(info.name == "life")
        #expect(info.pageSize == 64 << 10)
        #expect(info.shelves.count == 1)
        #expect(info.usedBytes == 0)
        #expect(info.capacityBytes > 14 << 20 && info.capacityBytes < 16 << 20)
        let uuid = pool.uuid
        pool.close()

        let again = try Pool.open(name: "life", at: scratch.path)
        #expect(again.uuid == uuid)
        // Destroy is refused while the pool is open, and names the holder.
        #expect(throws: PoolError.inUse(name: "life", pids: [getpid()])) {
            try Pool.destroy(name: "life", at: scratch.path)
        }
        again.close()
        try Pool.destroy(name: "life", at: scratch.path)
        #expect(!SystemCall.exists("\(scratch.path)/life"))
        #expect(throws: PoolError.poolNotFound(name: "life", path: "\(scratch.path)/life")) {
            try Pool.open(name: "life", at: scratch.path)
        }
    }

    /// A pool closed, then dropped (its deinit closes again), must not free
    /// its old slot a second time: by then another process may hold it, and
    /// would lose its claim on what it caches (seen as leaks after a kill).
    @Test func aSecondCloseLeavesTheSlotItsNextHolderTook() throws {
        let scratch = Scratch()
        var pool: Pool? = try Pool.create(name: "twice", size: 8 << 20, at: scratch.path)
        pool!.close()
        let holder = try Child(builtExecutable("PoolTestHelper"), ["hold", scratch.path, "twice"])
        let opened = holder.readLine() ?? ""
        #expect(opened.hasPrefix("open"), "\(opened)")
        pool = nil
        let reopened = try Pool.open(name: "twice", at: scratch.path)
        defer { reopened.close() }
        #expect(reopened.info().processes.contains(holder.pid), "\(reopened.info().processes)")
    }

    @Test func createRefusesAnExistingPoolAndLeavesItAlone() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "twice", size: 8 << 20, at: scratch.path)
        let address = try pool.allocatePages()
        try pool.store(42, at: address)
        pool.close()
        #expect(throws: PoolError.poolExists(name: "twice", path: "\(scratch.path)/twice")) {
            try Pool.create(name: "twice", size: 8 << 20, at: scratch.path)
        }
        let reopened = try Pool.open(name: "twice", at: scratch.path)
        #expect(try reopened.load(at: address) == 42)
    }

    @Test(arguments: ["", ".hidden", "-dash", "a/b", "sp ace", String(repeating: "x", count: 64)])
    func refusesBadNames(_ name: String) {
        let scratch = Scratch()
        #expect(throws: PoolError.self) { try Pool.create(name: name, size: 8 << 20, at: scratch.path) }
        #expect(directoryNames(scratch.path).isEmpty)
    }

    @Test func refusesBadPageSizesAndSizes() {
        let scratch = Scratch()
        for pageSize: UInt64 in [0, 3000, 2048, 96 << 10, 2 << 30] {
            #expect(throws: PoolError.self) {
                try Pool.create(name: "p", size: 64 << 20, pageSize: pageSize, at: scratch.path)
            }
        }
        #expect(throws: PoolError.self) { try Pool.create(name: "p", size: 4096, at: scratch.path) }
        #expect(throws: PoolError.self) { try Pool.create(name: "p", size: 512 << 10, at: scratch.path) }
        #expect(directoryNames(scratch.path).isEmpty)
    }

    @Test func refusesMoreSpaceThanTheFileSystemHas() throws {
        let scratch = Scratch()
        let available = availableBytes(scratch.path)
        #expect {
            try Pool.create(name: "huge", size: available * 2, at: scratch.path)
        } throws: { error in
            guard case .notEnoughSpace(let path, let needed, _)? = error as? PoolError else { return false }
            return path == scratch.path && needed == available * 2
        }
        #expect(directoryNames(scratch.path).isEmpty)
    }

    @Test func pmemPoolKeepsDataAcrossReopen() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "pm", size: 8 << 20, pageSize: 4096, medium: .pmem, at: scratch.path)
        #expect(pool.info().shelves[0].medium == .pmem)
        let address = try pool.allocatePages(count: 3)
        try pool.write(at: address, bytes: Array("persistent".utf8))
        try pool.persist(at: address, count: 10)
        pool.close()
        let reopened = try Pool.open(name: "pm", at: scratch.path)
        #expect(try reopened.read(at: address, count: 10) == Array("persistent".utf8))
        #expect(reopened.usedPages == 3)
    }

    @Test func destroyRefusesADirectoryThatIsNotAPool() throws {
        let scratch = Scratch()
        try SystemCall.makeDirectories(scratch.path + "/notapool")
        let fd = open(scratch.path + "/notapool/precious.txt", O_CREAT | O_WRONLY, 0o600)
        close(fd)
        #expect(throws: PoolError.self) { try Pool.destroy(name: "notapool", at: scratch.path) }
        #expect(SystemCall.exists(scratch.path + "/notapool/precious.txt"))
    }
}

#if canImport(Glibc)
import Glibc
#endif
