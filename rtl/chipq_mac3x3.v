// chipq RTL check: 3x3 multiply-accumulate with bias alignment (SPEC.md 4.2, first line).
//   acc_out = (first ? bias << bias_shift : acc_in) + sum_t weight[t] * x[t]
// Activations are 9-bit signed: the conv1 input x0 = p - mean is -255..255, later layers 0..255.
// The writer proves (SPEC 4.5) that no partial sum leaves signed 32 bits, so 32-bit arithmetic is exact.
`default_nettype none

module chipq_mac3x3 (
    input  wire        [9*14-1:0] weights,     // tap t at [t*14 +: 14], signed (alpha * M)
    input  wire        [9*9-1:0]  x,           // tap t at [t*9 +: 9], signed
    input  wire                   first,       // start a new sum from the aligned bias
    input  wire        [11:0]     bias,        // 12-bit two's complement
    input  wire        [4:0]      bias_shift,  // 0..31
    input  wire signed [31:0]     acc_in,
    output reg  signed [31:0]     acc_out
);
    wire signed [31:0] aligned = $signed({{20{bias[11]}}, bias}) <<< bias_shift;
    integer t;
    always @* begin
        acc_out = first ? aligned : acc_in + 32'sd0;
        for (t = 0; t < 9; t = t + 1)
            acc_out = acc_out + $signed(weights[t*14 +: 14]) * $signed(x[t*9 +: 9]);
    end
endmodule

`default_nettype wire
