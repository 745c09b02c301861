// chipq RTL check: requantiser (SPEC.md 4.2, rest).
//   r = (acc + 2^(s-1)) >>> s   (s > 0; rounds half up, towards +inf)    r = acc   (s = 0)
//   y = min(max(r, 0), 255)     (ReLU, then saturation to uint8)
// The sum is formed in 33 bits, so the rounding term cannot wrap even outside the SPEC 4.5 bound.
`default_nettype none

module chipq_requant (
    input  wire signed [31:0] acc,
    input  wire        [4:0]  out_shift,  // 0..31
    output wire        [7:0]  y
);
    wire signed [32:0] wide = acc;
    wire signed [32:0] half = (out_shift == 5'd0) ? 33'sd0 : (33'sd1 <<< (out_shift - 5'd1));
    wire signed [32:0] r = (wide + half) >>> out_shift;

    assign y = r[32] ? 8'd0 : ((r > 33'sd255) ? 8'd255 : r[7:0]);
endmodule

`default_nettype wire
