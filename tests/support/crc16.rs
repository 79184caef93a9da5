//! CRC-16/XMODEM written independently of the agent's (`handler::xmodem`), so
//! the simulated receivers catch a wrong CRC in what the agent sends. The
//! simulators include this file with `#[path]`.

/// CRC-16/XMODEM (CCITT polynomial 0x1021, initial value 0), bit by bit as the
/// MT7681 SDK's `crc_cal_by_bit`.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[test]
fn crc16_of_the_standard_check_string() {
    assert_eq!(crc16(b"123456789"), 0x31C3);
}
