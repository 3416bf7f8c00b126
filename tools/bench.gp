# bench.gp - the chart of BENCHMARKS.md from the lines `tools/bench --results FILE`
# appends: rows, then floor/baseline/ingestd seconds for the first load and the re-load.
#   gnuplot -e "data='bench.dat'" tools/bench.gp > docs/bench.svg
set terminal svg size 720,420 dynamic font "sans,12"
set title "500k-row and larger product files into PostgreSQL 15, 2 CPUs"
set xlabel "rows in the file"
set ylabel "seconds (first load, end to end)"
set logscale xy
set key top left
set grid
plot data using 1:4 with linespoints title "ingestd (rows + products_agg)", \
     data using 1:3 with linespoints title "baseline: psql \\copy + upsert + CTAS", \
     data using 1:2 with linespoints title "floor: \\copy into an unindexed table"
