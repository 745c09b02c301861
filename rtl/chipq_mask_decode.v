// chipq RTL check: mask decoder of one kernel tap (formats/SPEC.md 3.3 and 4.2).
// An m-bit code c stands for the odd level M = 2c - (2^m - 1); the tap's weight is alpha * M.
// m is a run-time input (1..5); code bits at and above m are ignored.
// |alpha * M| <= 255 * 31 = 7905, so a 14-bit signed weight holds every value exactly.
`default_nettype none

module chipq_mask_decode (
    input  wire        [4:0]  code,    // mask code, bits m-1..0 used
    input  wire        [2:0]  m,       // mask bits, 1..5
    input  wire        [7:0]  alpha,   // unsigned kernel scale
    output wire signed [5:0]  level,   // M, -31..31 odd
    output wire signed [13:0] weight   // alpha * M
);
    wire [5:0] top = (6'd1 << m) - 6'd1;            // 2^m - 1
    wire [4:0] c = code & top[4:0];
    wire signed [6:0] level7 = $signed({1'b0, c, 1'b0}) - $signed({1'b0, top});
    wire signed [14:0] product = $signed({1'b0, alpha}) * $signed(level7[5:0]);

    assign level = level7[5:0];
    assign weight = product[13:0];
endmodule

`default_nettype wire
