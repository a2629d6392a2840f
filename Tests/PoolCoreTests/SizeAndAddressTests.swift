import Testing
import TestSupport
@testable import PoolCore

@Suite struct ByteSizeTests {
    @Test func parsesBinaryUnits() throws {
        #expect(try ByteSize.parse("4096") == 4096)
        #expect(try ByteSize.parse("64K") == 65536)
        #expect(try ByteSize.parse("64k") == 65536)
        #expect(try ByteSize.parse("1536M") == 1536 << 20)
        #expect(try ByteSize.parse("4G") == 4 << 30)
        #expect(try ByteSize.parse("2GiB") == 2 << 30)
        #expect(try ByteSize.parse(" 1T ") == 1 << 40)
    }

    @Test(arguments: ["", "0", "0K", "G", "1.5G", "-1G", "12Q", "abc", "99999999999999999999", "100000P"])
    func refusesNonsense(_ text: String) {
        #expect(throws: PoolError.self) { try ByteSize.parse(text) }
    }

    @Test func formatsRoundAndFractional() {
        #expect(ByteSize.format(4 << 30) == "4G")
        #expect(ByteSize.format(65536) == "64K")
        #expect(ByteSize.format(1536 << 20) == "1.5G")
        #expect(ByteSize.format(100) == "100B")
    }
}

@Suite struct GlobalAddressTests {
    @Test func packsShelfAndOffset() {
        let address = GlobalAddress(shelf: 3, offset: 0x1_2345_6000)
        #expect(address.shelf == 3)
        #expect(address.offset == 0x1_2345_6000)
        #expect(address.rawValue == 3 << 48 | 0x1_2345_6000)
        #expect(GlobalAddress(address.description) == address)
        #expect(GlobalAddress.null.isNull)
        #expect(address.advanced(by: 16).offset == 0x1_2345_6010)
    }

    @Test func refusesMalformedText() {
        #expect(GlobalAddress("3") == nil)
        #expect(GlobalAddress("x:0x10") == nil)
        #expect(GlobalAddress("1:zz") == nil)
        #expect(GlobalAddress("70000:0x10") == nil)
    }
}
