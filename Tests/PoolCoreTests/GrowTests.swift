import Testing
import TestSupport
@testable import PoolCore

@Suite struct GrowTests {
    /// An open pool reaches its files through the directory it checked,
    /// held open: a directory put at its path afterwards (by whoever could
    /// rename things there) never receives or supplies a shelf.
    @Test func aDirectorySwappedInAfterTheOpenIsNeverUsed() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "held", size: 4 << 20, pageSize: 64 << 10, at: scratch.path)
        defer { pool.close() }
        #expect(rename((scratch.path + "/held"), (scratch.path + "/moved")) == 0)
        #expect(mkdir((scratch.path + "/held"), 0o755) == 0)
        #expect(try pool.grow(by: 8 << 20) == 1)
        #expect(SystemCall.exists(scratch.file("moved", "shelf-1")))
        #expect(directoryNames((scratch.path + "/held")).isEmpty, "nothing made in the directory swapped in")
        let address = try pool.allocatePages(count: 100)
        #expect(address.shelf == 1)
        try pool.freePages(at: address, count: 100)
    }

    @Test func growWhileAnotherProcessHasThePoolOpen() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "grow", size: 4 << 20, pageSize: 64 << 10, at: scratch.path)
        let before = pool.freePageCount
        let child = try Child(builtExecutable("PoolTestHelper"), ["hold", scratch.path, "grow"])
        #expect(child.readLine()?.hasPrefix("open") == true)
        // More than the first shelf can give: refused before the grow.
        #expect(child.ask("alloc \(before + 10)").hasPrefix("error: pool 'grow' is full"))

        let index = try pool.grow(by: 8 << 20)
        #expect(index == 1)
        #expect(pool.info().shelves.count == 2)
        let answer = child.ask("alloc \(before + 10)")
        let address = try #require(GlobalAddress(answer), "child said \(answer)")
        #expect(address.shelf == 1)
        #expect(child.ask("shelves") == "2")
        #expect(pool.usedPages == before + 10)
        #expect(child.ask("free \(address) \(before + 10)") == "ok")
        #expect(child.ask("quit") == "bye")
        child.wait()
        pool.close()

        let reopened = try Pool.open(name: "grow", at: scratch.path)
        #expect(reopened.info().shelves.count == 2)
        #expect(reopened.usedPages == 0)
    }

    @Test func aHalfAddedShelfIsIgnoredAndReplaced() throws {
        let scratch = Scratch()
        var pool = try Pool.create(name: "half", size: 4 << 20, pageSize: 4096, at: scratch.path)
        pool.close()
        // What a crash between format and publish leaves: files nobody refers to.
        for name in ["shelf-1", "shelf-1.tmp"] {
            let fd = open(scratch.file("half", name), O_CREAT | O_WRONLY, 0o600)
            _ = write(fd, "junk", 4)
            close(fd)
        }
        pool = try Pool.open(name: "half", at: scratch.path)
        #expect(pool.info().shelves.count == 1)
        try pool.grow(by: 4 << 20)
        #expect(pool.info().shelves.count == 2)
        #expect(!SystemCall.exists(scratch.file("half", "shelf-1.tmp")))
    }

    @Test func badGrowSizesAreRefused() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "g", size: 4 << 20, pageSize: 64 << 10, at: scratch.path)
        #expect(throws: PoolError.self) { try pool.grow(by: 4096) }
        #expect(throws: PoolError.self) { try pool.grow(by: 1 << 50) }
        #expect(pool.info().shelves.count == 1)
    }
}

#if canImport(Glibc)
import Glibc
#endif
